//! Settle and watch mode.
use rederive::node::registered_nodes;
use rederive::storage::{Backend, Connector};
use rederive::watch::{watch_connected, watch_with, WatchEvent, WatchOptions};
use rederive::{derive_table, Db, Graph, Row, Staleness};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

mod common;

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Note {
    #[row(key)]
    pub id: i64,
    pub text: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Measure {
    pub chars: i64,
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive_table]
fn measure(n: &Note) -> Measure {
    CALLS.fetch_add(1, Ordering::SeqCst);
    Measure {
        chars: n.text.chars().count() as i64,
    }
}

/// The registered graph, with `measure` given a settle time and declared files.
fn graph(settle_ms: u64, base: Option<&str>) -> Graph {
    let mut node = *registered_nodes()
        .into_iter()
        .find(|n| n.name == "measure")
        .unwrap();
    node.settle_ms = settle_ms;
    if let Some(base) = base {
        node.files = &["config/*.toml"];
        node.base_dir = Box::leak(base.to_owned().into_boxed_str());
    }
    Graph::new(vec![&<Note as Row>::TABLE], vec![node]).unwrap()
}

#[test]
fn settle_waits_for_the_root_row_to_be_quiet() -> rederive::Result<()> {
    // Margins of several hundred milliseconds keep this steady on a busy machine.
    let db = Db::open_in_memory_with(graph(1000, None))?;
    db.put(Note {
        id: 1,
        text: "draft".into(),
    })?;
    let r = db.refresh()?;
    assert_eq!((r.computed, r.settling), (0, 1), "{r:?}");
    let status = db.status()?;
    let m = status.iter().find(|s| s.table == "Measure").unwrap();
    assert_eq!((m.missing, m.settling), (1, 1));
    // Another edit, after the first one has settled, restarts the wait.
    std::thread::sleep(Duration::from_millis(1100));
    db.put(Note {
        id: 1,
        text: "draft 2".into(),
    })?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(db.refresh()?.computed, 0);
    std::thread::sleep(Duration::from_millis(900));
    let r = db.refresh()?;
    assert_eq!((r.computed, r.settling), (1, 0), "{r:?}");
    assert_eq!(db.get::<Measure>(1)?.chars, 7);
    // `get` is explicit demand: it does not wait.
    db.put(Note {
        id: 1,
        text: "now".into(),
    })?;
    assert_eq!(db.get::<Measure>(1)?.chars, 3);
    Ok(())
}

/// Run as a separate process by the watch test: writes one input row.
#[test]
#[ignore]
fn writer_process() {
    let (Some(path), Some(base)) = (
        std::env::var_os("WATCH_DB"),
        std::env::var("WATCH_BASE").ok(),
    ) else {
        return;
    };
    let db = Db::open_with(&path, graph(0, Some(&base))).unwrap();
    db.put(Note {
        id: 42,
        text: "from another process".into(),
    })
    .unwrap();
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(50)) {
            let hit = e.contains(what);
            seen.push(e);
            if hit {
                return seen;
            }
        }
    }
    panic!("no event containing {what:?} within 20 s; saw {seen:?}");
}

#[test]
fn watch_notices_other_processes_and_declared_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_string_lossy().into_owned();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let config = dir.path().join("config/rules.toml");
    std::fs::write(&config, "limit = 1").unwrap();
    let path = dir.path().join("watch.db");
    {
        let db = Db::open_with(&path, graph(0, Some(&base))).unwrap();
        db.put(Note {
            id: 1,
            text: "hello".into(),
        })
        .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<String>();
    let options = WatchOptions {
        poll: Duration::from_millis(50),
        debounce: Duration::from_millis(50),
        ..Default::default()
    };
    let watcher = {
        let (stop, path, base) = (stop.clone(), path.clone(), base.clone());
        std::thread::spawn(move || {
            watch_with(&path, graph(0, Some(&base)), &options, &stop, |e| {
                let text = match e {
                    WatchEvent::Refreshed { cause, report } => {
                        format!("refreshed {cause}: {report}")
                    }
                    WatchEvent::FilesChanged(files) => format!("files {files:?}"),
                    other => format!("{other:?}"),
                };
                let _ = tx.send(text);
            })
        })
    };
    wait_for(&rx, "refreshed start: 1 computed");

    // An input written by another process.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["writer_process", "--exact", "--ignored", "--nocapture"])
        .env("WATCH_DB", &path)
        .env("WATCH_BASE", &base)
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(&rx, "refreshed input: 1 computed");

    // A file beside the declared ones that no glob matches changes nothing.
    std::fs::write(dir.path().join("config/notes.md"), "not a rule").unwrap();
    let quiet_until = Instant::now() + Duration::from_millis(400);
    while let Ok(e) = rx.recv_timeout(quiet_until.saturating_duration_since(Instant::now())) {
        assert!(!e.starts_with("files"), "an undeclared file triggered: {e}");
    }

    // A declared file changes: the code version changes, rows are recomputed.
    let before = CALLS.load(Ordering::SeqCst);
    std::fs::write(&config, "limit = 2").unwrap();
    wait_for(&rx, "rules.toml");
    wait_for(&rx, "refreshed files: 0 computed, 2 unchanged");
    assert_eq!(CALLS.load(Ordering::SeqCst) - before, 2);

    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap().unwrap();
    let db = Db::open_with(&path, graph(0, Some(&base))).unwrap();
    assert_eq!(db.get::<Measure>(42).unwrap().chars, 20);
    assert_eq!(db.explain::<Measure>(1).unwrap(), Staleness::Fresh);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let leases: i64 = conn
        .query_row("SELECT count(*) FROM rederive_leases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leases, 0);
}

/// Runs watch mode over `connector` in a thread, sending each event as
/// text; returns the thread (which returns when `stop` is set and the loop
/// wakes).
fn spawn_watch(
    connector: Arc<dyn Connector>,
    options: WatchOptions,
    stop: &Arc<AtomicBool>,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<rederive::Result<()>> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        watch_connected(&*connector, graph(0, None), &options, &stop, |e| {
            let text = match e {
                WatchEvent::Refreshed { cause, report } => format!("refreshed {cause}: {report}"),
                WatchEvent::FilesChanged(files) => format!("files {files:?}"),
                other => format!("{other:?}"),
            };
            let _ = tx.send(text);
        })
    })
}

/// The connector of a PostgreSQL database.
fn pg_connector(url: &str) -> Arc<dyn Connector> {
    rederive_postgres::PgStore::open(url)
        .unwrap()
        .connector()
        .expect("PostgreSQL opens more connections")
}

fn note(id: i64, text: &str) -> Note {
    Note {
        id,
        text: text.into(),
    }
}

/// A watcher running in a thread (see [`spawn_watch`]), its events, and
/// the flag that stops it.
struct Watching {
    stop: Arc<AtomicBool>,
    events: mpsc::Receiver<String>,
    thread: std::thread::JoinHandle<rederive::Result<()>>,
}

/// A PostgreSQL database for `test` holding one note, and watch mode over
/// it (through `connector`, or the database's own when `None`) polling
/// every `poll`, past its first refresh; `None` when PostgreSQL is missing.
fn watch_postgres(
    test: &str,
    poll: Duration,
    connector: impl FnOnce(Arc<dyn Connector>) -> Arc<dyn Connector>,
) -> Option<(Db, Watching)> {
    let url = common::postgres_db(test)?;
    let writer = Db::open_with(&url, graph(0, None)).unwrap();
    writer.put(note(1, "hello")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, events) = mpsc::channel::<String>();
    let options = WatchOptions {
        poll,
        debounce: Duration::from_millis(50),
        ..Default::default()
    };
    let thread = spawn_watch(connector(pg_connector(&url)), options, &stop, tx);
    wait_for(&events, "refreshed start: 1 computed");
    Some((
        writer,
        Watching {
            stop,
            events,
            thread,
        },
    ))
}

/// With a poll interval longer than the test waits, only PostgreSQL's
/// `NOTIFY` can wake watch mode in time: another connection's write is
/// refreshed at once.
#[test]
fn watch_on_postgres_wakes_on_a_notification() {
    // Far beyond `wait_for`'s 20 s: a refresh within them came from a
    // notification, not from polling.
    let poll = Duration::from_secs(600);
    let Some((writer, w)) = watch_postgres("watch_notify", poll, |c| c) else {
        return;
    };
    for (id, text) in [(2, "second"), (3, "a third note")] {
        writer.put(note(id, text)).unwrap();
        wait_for(&w.events, "refreshed input: 1 computed");
    }
    // Stopping: the loop sees the flag when the next write wakes it.
    w.stop.store(true, Ordering::SeqCst);
    writer.put(note(4, "wakes the loop")).unwrap();
    w.thread.join().unwrap().unwrap();
    assert_eq!(writer.get::<Measure>(3).unwrap().chars, 12);
    assert_eq!(writer.explain::<Measure>(2).unwrap(), Staleness::Fresh);
}

/// A connector that sends no hints, like PostgreSQL behind a pooler that
/// drops `LISTEN`.
struct NoHints(Arc<dyn Connector>);

impl Connector for NoHints {
    fn connect(&self) -> rederive::Result<Box<dyn Backend>> {
        self.0.connect()
    }

    fn location(&self) -> String {
        self.0.location()
    }
}

/// Without hints, watch mode on PostgreSQL still notices writes by polling
/// the change token.
#[test]
fn watch_on_postgres_polls_without_hints() {
    let no_hints = |c| Arc::new(NoHints(c)) as Arc<dyn Connector>;
    let Some((writer, w)) = watch_postgres("watch_poll", Duration::from_millis(50), no_hints)
    else {
        return;
    };
    writer.put(note(2, "polled")).unwrap();
    wait_for(&w.events, "refreshed input: 1 computed");
    writer.delete::<Note>(1).unwrap();
    wait_for(&w.events, "refreshed input: ");
    w.stop.store(true, Ordering::SeqCst);
    w.thread.join().unwrap().unwrap();
    assert_eq!(writer.explain::<Measure>(2).unwrap(), Staleness::Fresh);
    let status = writer.status().unwrap();
    let m = status.iter().find(|s| s.table == "Measure").unwrap();
    assert_eq!(
        (m.rows, m.fresh),
        (1, 1),
        "the deleted note's row went: {m:?}"
    );
}
