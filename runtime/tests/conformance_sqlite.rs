//! The backend conformance suite against SQLite: database files in a
//! temporary directory (shared: a second connection opens the same file),
//! and private in-memory databases.

use rederive_runtime::sqlite::SqliteStore;
use rederive_runtime::storage::conformance::Harness;
use rederive_runtime::storage::Backend;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A harness that opens a new file in its own temporary directory for
/// each case (the directory goes when the harness does).
fn sqlite_file() -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let n = AtomicUsize::new(0);
    Harness {
        open: Box::new(move |clock| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let path = dir.path().join(format!("case-{i}.sqlite"));
            let store = SqliteStore::open_with_clock(&path, clock)?;
            Ok(Box::new(store) as Box<dyn Backend>)
        }),
        shared: true,
    }
}

fn sqlite_memory() -> Harness {
    Harness {
        open: Box::new(|clock| {
            let store = SqliteStore::open_in_memory_with_clock(clock)?;
            Ok(Box::new(store) as Box<dyn Backend>)
        }),
        shared: false,
    }
}

rederive_runtime::conformance_tests!(file, sqlite_file);
rederive_runtime::conformance_tests!(memory, sqlite_memory);
