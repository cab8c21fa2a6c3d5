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
    let mut db = open(graph.clone())?;
    let run =
        |db: &Db, cause: &'static str, on_event: &mut dyn FnMut(WatchEvent)| -> Result<bool> {
            match db.refresh() {
                Ok(report) => {
                    let waiting = report.settling > 0 || report.skipped > 0;
                    on_event(WatchEvent::Refreshed { cause, report });
                    Ok(waiting)
                }
                Err(Error::Cancelled) => Ok(false),
                Err(e) => Err(e),
            }
        };
    // The version is read before each refresh, so that a write landing
    // during the refresh is noticed afterwards.
    let mut version = db.change_token()?;
    let mut waiting = run(&db, "start", &mut on_event)?;
    let mut last_retry = Instant::now();
    while !stop.load(Ordering::SeqCst) {
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
        if stop.load(Ordering::SeqCst) {
            break;
        }
        changed_files
            .retain(|p| declared.contains(p) || patterns.iter().any(|g| g.matches_path(p)));
        changed_files.sort();
        changed_files.dedup();
        if !changed_files.is_empty() {
            on_event(WatchEvent::FilesChanged(changed_files));
            drop(db);
            db = open(graph.clone())?;
            version = db.change_token()?;
            waiting = run(&db, "files", &mut on_event)?;
            continue;
        }
        let now = db.change_token()?;
        if now != version {
            if !debounced {
                std::thread::sleep(options.debounce);
            }
            version = db.change_token()?;
            waiting = run(&db, "input", &mut on_event)?;
        } else if waiting && last_retry.elapsed() >= Duration::from_millis(500) {
            version = db.change_token()?;
            waiting = run(&db, "settle", &mut on_event)?;
            last_retry = Instant::now();
        }
    }
    Ok(())
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
    })
}
