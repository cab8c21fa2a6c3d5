//! Watch mode: a long-running loop that keeps a database fresh.
//!
//! It notices input writes from any process by polling the backend's
//! change token at a low rate (for SQLite, `PRAGMA data_version`: a single
//! integer read, no table scan), at once when the backend hints at a write
//! (PostgreSQL: `LISTEN`/`NOTIFY`, see [`Connector::subscribe`]), and changes to the files declared with `files = [..]` through the
//! `notify` crate (inotify on Linux). Changes are debounced, then the
//! database is refreshed; a change to a declared file reopens the database
//! so that the affected code versions are recomputed. Rows waiting for
//! `settle` are picked up when their time comes.

use crate::code::matched_files;
use crate::engine::Db;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::report::Report;
use crate::sqlite::SqliteConnector;
use crate::storage::Connector;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How watch mode polls and debounces.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the change token is read.
    pub poll: Duration,
    /// How long to wait after a change for more changes before refreshing.
    pub debounce: Duration,
    /// Lease time-to-live for this worker.
    pub lease_ttl: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll: Duration::from_millis(200),
            debounce: Duration::from_millis(100),
            lease_ttl: crate::engine::DEFAULT_LEASE_TTL,
        }
    }
}

/// What watch mode did, for the caller to print.
#[derive(Debug)]
pub enum WatchEvent {
    /// A refresh ran.
    Refreshed {
        /// Why: "start", "input", "files", or "settle".
        cause: &'static str,
        /// What it did.
        report: Report,
    },
    /// Declared files changed; the database was reopened with new code versions.
    FilesChanged(Vec<PathBuf>),
    /// A refresh or a look at the database failed (a server restarted, a
    /// network cut): watch mode waits `retry_in`, then tries again,
    /// reconnecting as needed.
    Retrying {
        /// What failed.
        error: String,
        /// Failures in a row, this one included.
        failures: u32,
        /// How long until the next try.
        retry_in: Duration,
    },
    /// The database answers again after `failures` failures in a row.
    Recovered {
        /// How many failures in a row there were.
        failures: u32,
    },
}

/// What wakes the watch loop before its next poll.
enum Wake {
    /// A file changed.
    File(PathBuf),
    /// The backend hinted that another connection wrote.
    Database,
}

/// Watches the database at `path` (a file, or a URL of a linked backend) with the registered graph until
/// `stop` is set.
pub fn watch(
    path: &Path,
    options: &WatchOptions,
    stop: &Arc<AtomicBool>,
    on_event: impl FnMut(WatchEvent),
) -> Result<()> {
    watch_with(path, Graph::from_registry()?, options, stop, on_event)
}

/// Like [`watch`], with an explicitly assembled graph.
pub fn watch_with(
    path: &Path,
    graph: Graph,
    options: &WatchOptions,
    stop: &Arc<AtomicBool>,
    on_event: impl FnMut(WatchEvent),
) -> Result<()> {
    let location = path.to_str().unwrap_or_default();
    match crate::storage::url::open_url(location)? {
        Some(backend) => {
            let connector = backend.connector().ok_or_else(|| Error::NotADatabase {
                path: path.to_owned(),
                reason: "this backend opens no further connections, which watch mode needs".into(),
            })?;
            drop(backend);
            watch_connected(&*connector, graph, options, stop, on_event)
        }
        None => watch_connected(&SqliteConnector::new(path), graph, options, stop, on_event),
    }
}

fn has_wildcard(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// The directories to watch for a graph's declared files: the part of each
/// glob before its first wildcard, watched recursively only when the glob
/// has a wildcard in a directory part (`src/**/*.txt`), so that a glob like
/// `*.toml` at the crate's root does not watch `target/`.
fn watched_dirs(graph: &Graph) -> Vec<(PathBuf, RecursiveMode)> {
    let mut dirs: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for node in graph.nodes() {
        for pattern in node.files {
            let parts: Vec<String> = Path::new(pattern)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let literal: PathBuf = parts.iter().take_while(|c| !has_wildcard(c)).collect();
            let deep = parts.iter().rev().skip(1).any(|c| has_wildcard(c));
            let mode = if deep {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let mut dir = Path::new(node.base_dir).join(literal);
            while !dir.is_dir() {
                match dir.parent() {
                    Some(p) => dir = p.to_owned(),
                    None => break,
                }
            }
            match dirs.iter_mut().find(|(d, _)| *d == dir) {
                Some(entry) if deep => entry.1 = RecursiveMode::Recursive,
                Some(_) => {}
                None => dirs.push((dir, mode)),
            }
        }
    }
    dirs
}

/// The declared globs, as absolute patterns.
fn declared_patterns(graph: &Graph) -> Vec<glob::Pattern> {
    graph
        .nodes()
        .iter()
        .flat_map(|n| n.files.iter().map(move |f| Path::new(n.base_dir).join(f)))
        .filter_map(|p| glob::Pattern::new(&p.to_string_lossy()).ok())
        .collect()
}

/// Like [`watch_with`], on any database, opened through its connector.
pub fn watch_connected(
    connector: &dyn Connector,
    graph: Graph,
    options: &WatchOptions,
    stop: &Arc<AtomicBool>,
    mut on_event: impl FnMut(WatchEvent),
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Wake>();
    let files = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() {
                for p in event.paths {
                    let _ = files.send(Wake::File(p));
                }
            }
        }
    })
    .map_err(|e| Error::Watch(e.to_string()))?;
    // Hints of other connections' writes, where the backend sends them; a
    // backend that cannot listen now is polled alone.
    let _subscription = connector
        .subscribe(Arc::new(move || {
            let _ = tx.send(Wake::Database);
        }))
        .unwrap_or(None);
    for (dir, mode) in watched_dirs(&graph) {
        watcher
            .watch(&dir, mode)
            .map_err(|e| Error::Watch(format!("{}: {e}", dir.display())))?;
    }
    // Files that matched at start (a deletion counts too) and the globs
    // (new files count too).
    let declared: Vec<PathBuf> = graph
        .nodes()
        .iter()
        .map(matched_files)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let patterns = declared_patterns(&graph);

    let open = |graph: Graph| -> Result<Db> {
        // The stop flag also cancels a refresh in progress.
        let db = Db::open_backend(connector.connect()?, graph)?.with_cancel_flag(stop.clone());
        db.set_lease_ttl(options.lease_ttl);
        Ok(db)
    };
    // Opening is checked once, at start: a database this program cannot
    // open is an error to report, not to wait out.
    let mut watching = Watching {
        db: Some(open(graph.clone())?),
        version: None,
        waiting: false,
        last_retry: Instant::now(),
        due: Some("start"),
    };
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        match watching.step(
            &rx,
            options,
            &declared,
            &patterns,
            &open,
            &graph,
            &mut on_event,
        ) {
            Ok(()) => {
                if failures > 0 {
                    on_event(WatchEvent::Recovered { failures });
                    failures = 0;
                }
            }
            Err(Error::Cancelled) => break,
            Err(error) => {
                // The database went away (a server restart, a network
                // cut) or a refresh failed: say so, wait, and go on. The
                // next step refreshes again, reconnecting as it goes.
                failures += 1;
                let retry_in = retry_delay(failures);
                on_event(WatchEvent::Retrying {
                    error: error.to_string(),
                    failures,
                    retry_in,
                });
                sleep_unless_stopped(retry_in, stop);
                watching.due.get_or_insert("retry");
                watching.version = None;
            }
        }
    }
    Ok(())
}

/// How long watch mode waits after its `failures`-th failure in a row:
/// 100 ms, doubling, at most 10 s.
fn retry_delay(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(10_000))
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The state of the watch loop between its steps.
struct Watching {
    /// The database (`None` while it is being reopened).
    db: Option<Db>,
    /// The change token read before the last refresh (`None`: read it).
    version: Option<crate::storage::ChangeToken>,
    /// Whether rows were left settling: then a refresh now and then.
    waiting: bool,
    last_retry: Instant,
    /// A refresh to run now, and why.
    due: Option<&'static str>,
}

impl Watching {
    /// One turn of the loop: a refresh that is due, then a wait for a
    /// change (a file, a hint, the change token) and what it calls for.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        rx: &mpsc::Receiver<Wake>,
        options: &WatchOptions,
        declared: &[PathBuf],
        patterns: &[glob::Pattern],
        open: &dyn Fn(Graph) -> Result<Db>,
        graph: &Graph,
        on_event: &mut dyn FnMut(WatchEvent),
    ) -> Result<()> {
        if self.db.is_none() {
            self.db = Some(open(graph.clone())?);
        }
        let Some(db) = self.db.as_ref() else {
            return Ok(());
        };
        if let Some(cause) = self.due {
            // The version is read before each refresh, so that a write
            // landing during the refresh is noticed afterwards.
            self.version = Some(db.change_token()?);
            self.waiting = refresh(db, cause, on_event)?;
            self.due = None;
            self.last_retry = Instant::now();
        }
        let mut changed_files: Vec<PathBuf> = Vec::new();
        let mut debounced = false;
        if let Ok(first) = rx.recv_timeout(options.poll) {
            debounced = true;
            // Debounce: collect what follows closely.
            let until = Instant::now() + options.debounce;
            let mut wake = Some(first);
            while let Some(w) = wake {
                if let Wake::File(p) = w {
                    changed_files.push(p);
                }
                wake = rx
                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                    .ok();
            }
        }
        changed_files
            .retain(|p| declared.contains(p) || patterns.iter().any(|g| g.matches_path(p)));
        changed_files.sort();
        changed_files.dedup();
        if !changed_files.is_empty() {
            on_event(WatchEvent::FilesChanged(changed_files));
            // Reopened, so that the new code versions are taken.
            self.db = None;
            self.db = Some(open(graph.clone())?);
            self.due = Some("files");
            return Ok(());
        }
        let now = db.change_token()?;
        if self.version.as_ref() != Some(&now) {
            if !debounced {
                std::thread::sleep(options.debounce);
            }
            self.due = Some("input");
        } else if self.waiting && self.last_retry.elapsed() >= Duration::from_millis(500) {
            self.due = Some("settle");
        }
        Ok(())
    }
}

/// Refreshes for `cause`; returns whether rows were left settling.
fn refresh(db: &Db, cause: &'static str, on_event: &mut dyn FnMut(WatchEvent)) -> Result<bool> {
    let report = db.refresh()?;
    let waiting = report.settling > 0;
    on_event(WatchEvent::Refreshed { cause, report });
    Ok(waiting)
}

/// Runs [`watch`] until Ctrl-C, printing what happens.
pub fn watch_until_interrupted(path: &Path, json: bool) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Watch(e.to_string()))?;
    watch(path, &WatchOptions::default(), &stop, |event| match event {
        WatchEvent::Refreshed { cause, report } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "event": "refreshed", "cause": cause, "report": report })
                );
            } else if report.calls() + report.blocked + report.settling > 0 || cause == "start" {
                println!("refresh ({cause}): {report}");
            }
        }
        WatchEvent::FilesChanged(files) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "event": "files_changed", "files": files })
                );
            } else {
                for f in files {
                    println!("changed: {}", f.display());
                }
            }
        }
        WatchEvent::Retrying {
            error,
            failures,
            retry_in,
        } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "event": "retrying", "error": error, "failures": failures, "retry_in_ms": retry_in.as_millis() as u64 })
                );
            } else {
                eprintln!(
                    "watch: {error}; trying again in {retry_in:.1?} (failure {failures} in a row)"
                );
            }
        }
        WatchEvent::Recovered { failures } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "event": "recovered", "failures": failures })
                );
            } else {
                eprintln!("watch: the database answers again (after {failures} failures)");
            }
        }
    })
}
