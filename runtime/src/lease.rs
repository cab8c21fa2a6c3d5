//! Leases: how workers (threads and processes) share one database without
//! computing a row twice.
//!
//! A worker claims rows before computing them (or, when it is the only live
//! worker, the whole table for one batch), extends its leases from a
//! heartbeat thread while its functions run, and writes a result only while
//! it still holds the lease (fencing, checked in the write transaction). A
//! crashed worker's leases expire and its rows are taken over. The claims and
//! the fencing are storage operations (see [`crate::backend::Backend`]); this
//! module holds the worker's side: its id and its heartbeat.

use crate::backend::Backend;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A thread that extends this worker's leases while its functions run.
pub(crate) struct Heartbeat {
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a lease lasts unless extended.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// A worker id unique across machines, processes and `Db`s: host, process,
/// a time nonce and a counter.
pub(crate) fn new_worker_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let nonce = crate::store::now_ms() % 1_000_000;
    format!(
        "{host}:{}:{nonce}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a thread that extends `worker`'s leases every third of the TTL,
/// through its own handle on the database.
pub(crate) fn start_heartbeat(
    handle: Box<dyn Backend>,
    worker: String,
    ttl: Arc<AtomicI64>,
) -> Option<Heartbeat> {
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("rederive-heartbeat".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let ttl_ms = ttl.load(Ordering::Relaxed);
                if last.elapsed() >= Duration::from_millis((ttl_ms / 3).max(1) as u64) {
                    let _ = handle.extend_leases(&worker, ttl_ms);
                    last = std::time::Instant::now();
                }
            }
        })
        .ok()?;
    Some(Heartbeat {
        stopping,
        thread: Some(thread),
    })
}

impl Heartbeat {
    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
