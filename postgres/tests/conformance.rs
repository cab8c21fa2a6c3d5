//! The backend conformance suite against PostgreSQL: each case in a new
//! database of this test binary's throwaway server (see
//! `rederive_postgres::testing`). Where PostgreSQL is not installed, every
//! case reports that it skipped, unless `REDERIVE_REQUIRE_POSTGRES=1`
//! makes that a failure.

use rederive_postgres::testing::TestServer;
use rederive_postgres::PgStore;
use rederive_runtime::storage::conformance::Harness;
use rederive_runtime::storage::Backend;

fn postgres() -> Option<Harness> {
    let server = match TestServer::shared() {
        Ok(server) => server,
        Err(skip) => {
            // libtest names each test's thread after the test.
            let case = std::thread::current()
                .name()
                .unwrap_or("a conformance case")
                .to_owned();
            skip.report(&case);
            return None;
        }
    };
    Some(Harness {
        open: Box::new(move |clock| {
            let url = server.new_database("conformance")?;
            let store = PgStore::open_with_clock(&url, clock)?;
            Ok(Box::new(store) as Box<dyn Backend>)
        }),
        shared: true,
    })
}

rederive_runtime::conformance_tests!(postgres, postgres);
