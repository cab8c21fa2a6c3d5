//! The backend conformance suite against PostgreSQL: each case in a new
//! database of the test binary's shared throwaway server.

use rederive_postgres::testing::TestServer;
use rederive_postgres::PgStore;
use rederive_runtime::storage::conformance::Harness;
use rederive_runtime::storage::Backend;

fn postgres() -> Harness {
    let server = TestServer::shared().expect("postgres");
    Harness {
        open: Box::new(move |clock| {
            let url = server.new_database("conformance")?;
            let store = PgStore::open_with_clock(&url, clock)?;
            Ok(Box::new(store) as Box<dyn Backend>)
        }),
        shared: true,
    }
}

rederive_runtime::conformance_tests!(postgres, postgres);
