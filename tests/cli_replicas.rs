//! The replica commands of the CLI, end to end through the `toy_lang`
//! example (whose `define NAME SOURCE` writes a `Definition` input row):
//! `fork`, `sync` between files and over HTTP (`serve` in a child process,
//! on loopback), `conflicts`, the conflict count of `status`, `retire`,
//! and the refusals of bad input.
//!
//! Exit codes: 0 ok, 1 rows in conflict (`conflicts`), 2 usage or database
//! errors.
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

mod common;

#[cfg(unix)]
use common::cli::interrupt;
use common::cli::{finish_within, spawn_lines, toy_lang, KillOnDrop, Run};

/// A replica's database file in a temporary directory, and the commands
/// run on it (through `$REDERIVE_DB`, as `define` needs).
struct Replica {
    db: PathBuf,
}

impl Replica {
    fn at(dir: &Path, name: &str) -> Replica {
        Replica { db: dir.join(name) }
    }

    fn path(&self) -> &str {
        self.db.to_str().expect("a UTF-8 path")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(toy_lang());
        cmd.args(args)
            .current_dir(self.db.parent().expect("in a directory"))
            .env("REDERIVE_DB", &self.db)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::new(
            common::cli::output_within(self.command(args), 120, args),
            args,
        )
    }

    /// Like [`Replica::run`], for a command that would run until
    /// interrupted if it did not fail (`serve`): fails the test after a
    /// minute instead of hanging.
    fn run_bounded(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        finish_within(
            KillOnDrop(cmd.spawn().expect("spawn toy_lang")),
            60,
            "a bounded run",
            args,
        )
    }

    #[track_caller]
    fn define(&self, name: &str, source: &str) {
        self.run(&["define", name, source]).code(0);
    }

    /// `get Definition NAME`'s source, asserting exit 0.
    #[track_caller]
    fn source(&self, name: &str) -> String {
        let j = self
            .run(&["get", "Definition", name, "--json"])
            .code(0)
            .json();
        j["row"]["source"]
            .as_str()
            .unwrap_or_else(|| panic!("no source in {j}"))
            .to_owned()
    }

    /// `conflicts --json`, asserting the exit code.
    #[track_caller]
    fn conflicts(&self, expected_code: i32) -> Vec<Json> {
        let j = self
            .run(&["conflicts", "--json"])
            .code(expected_code)
            .json();
        j.as_array().expect("conflicts --json is an array").clone()
    }

    /// `status --json`'s entry for `table`, asserting exit 0.
    #[track_caller]
    fn status_of(&self, table: &str) -> Json {
        let j = self.run(&["status", "--json"]).code(0).json();
        j.as_array()
            .expect("status --json is an array")
            .iter()
            .find(|t| t["table"] == table)
            .unwrap_or_else(|| panic!("status lacks {table}: {j}"))
            .clone()
    }

    /// `sync PEER --json`, asserting exit 0.
    #[track_caller]
    fn sync(&self, peer: &str) -> Json {
        self.run(&["sync", peer, "--json"]).code(0).json()
    }
}

/// A first replica with a definition, refreshed, and a fork of it.
fn two_replicas(dir: &Path) -> (Replica, Replica) {
    let desk = Replica::at(dir, "desk.db");
    desk.define("x", "1 + 2");
    desk.run(&["refresh"]).code(0);
    let laptop = Replica::at(dir, "laptop.db");
    desk.run(&["fork", laptop.path()])
        .code(0)
        .stdout_has("forked replica")
        .stdout_has(laptop.path());
    assert!(laptop.db.exists());
    (desk, laptop)
}

#[test]
fn fork_sync_conflict_and_its_resolution_between_files() {
    let dir = tempfile::tempdir().unwrap();
    let (desk, laptop) = two_replicas(dir.path());
    assert_eq!(laptop.source("x"), "1 + 2", "the fork holds the rows");
    assert!(laptop
        .run(&["status"])
        .code(0)
        .stdout
        .contains("Definition"));
    // `fork --json` says where, and which replica.
    let phone = Replica::at(dir.path(), "phone.db");
    let j = desk.run(&["fork", phone.path(), "--json"]).code(0).json();
    assert_eq!(j["forked"], phone.path(), "{j}");
    assert!(j["replica"].as_str().is_some_and(|n| !n.is_empty()), "{j}");

    // Nothing new: nothing sent.
    let r = laptop.sync(desk.path());
    assert_eq!(
        (&r["sent"], &r["received"]),
        (&Json::from(0), &Json::from(0))
    );
    laptop.conflicts(0);

    // Offline: the same row on both, and another row on the desk.
    laptop.define("x", "5");
    desk.define("x", "7");
    desk.define("y", "10 - 1");
    let r = laptop.run(&["sync", desk.path()]);
    r.code(0)
        .stdout_has("in conflict")
        .stdout_has("1 row in conflict (run `conflicts`)");
    assert_eq!(laptop.source("y"), "10 - 1");

    // Both list the conflict, with both versions, the winner first.
    for side in [&desk, &laptop] {
        let c = side.conflicts(1);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (&c[0]["table"], &c[0]["key"]),
            (&"Definition".into(), &"x".into())
        );
        assert_eq!(c[0]["count"], 2);
        let mut sources: Vec<&str> = c[0]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["source"].as_str().unwrap())
            .collect();
        assert_eq!(side.source("x"), sources[0], "the winner is listed first");
        sources.sort();
        assert_eq!(sources, ["5", "7"]);
    }
    assert_eq!(
        desk.conflicts(1),
        laptop.conflicts(1),
        "the same everywhere"
    );
    desk.run(&["conflicts"])
        .code(1)
        .stdout_has("Definition \"x\": 2 versions")
        .stdout_has("winner {")
        .stdout_has("\"source\":\"5\"")
        .stdout_has("\"source\":\"7\"")
        .stdout_has("1 row in conflict");
    // `status` counts it on the input table (and a conflict is no failure).
    assert_eq!(desk.status_of("Definition")["conflicts"], 1);
    assert_eq!(desk.status_of("Value")["conflicts"], 0);
    desk.run(&["status"])
        .code(0)
        .stdout_has("Definition: 1 row in conflict (run `conflicts`)");

    // Resolved on the desk, which has seen both: gone everywhere on sync.
    desk.define("x", "6 * 7");
    desk.conflicts(0);
    desk.run(&["conflicts"])
        .code(0)
        .stdout_has("no rows in conflict");
    let r = desk.sync(laptop.path());
    assert_eq!(r["conflicts"], 0, "{r}");
    laptop.conflicts(0);
    assert_eq!(laptop.status_of("Definition")["conflicts"], 0);
    assert!(!laptop.run(&["status"]).code(0).stdout.contains("conflict"));
    assert_eq!(laptop.source("x"), "6 * 7");
    laptop.run(&["refresh"]).code(0);
    let v = laptop.run(&["get", "Value", "x", "--json"]).code(0).json();
    assert_eq!(v["row"]["value"], 42, "{v}");

    // The phone forked before all this: it catches up from either.
    let r = phone.sync(laptop.path());
    assert_eq!(r["conflicts"], 0, "{r}");
    assert_eq!(phone.source("x"), "6 * 7");
    assert_eq!(phone.source("y"), "10 - 1");
}

/// `serve --listen 127.0.0.1:0` on `replica` (with `--json`, when asked),
/// its stdout lines sent to the returned channel as they come.
fn spawn_serve(replica: &Replica, json: bool) -> (KillOnDrop, Receiver<String>) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    if json {
        args.push("--json");
    }
    spawn_lines(replica.command(&args))
}

/// The first line `serve` prints (a guard against a server that hangs,
/// not a measure of its speed).
fn first_line(child: &mut KillOnDrop, rx: &Receiver<String>) -> String {
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.0.kill();
            let mut err = String::new();
            if let Some(mut s) = child.0.stderr.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut err);
            }
            panic!("serve printed no line ({e}); stderr:\n{err}")
        }
    }
}

/// A URL where nothing listens: a port bound, then freed.
fn nowhere() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[cfg(unix)]
#[test]
fn serve_sync_over_http_and_retire() {
    let dir = tempfile::tempdir().unwrap();
    let (desk, laptop) = two_replicas(dir.path());
    let phone = Replica::at(dir.path(), "phone.db");
    desk.run(&["fork", phone.path()]).code(0);

    let (mut server, lines) = spawn_serve(&desk, false);
    let line = first_line(&mut server, &lines);
    let prefix = "serving replica ";
    assert!(line.starts_with(prefix), "{line}");
    assert!(line.contains(&format!(" of {} on ", desk.path())), "{line}");
    let url = line
        .rsplit_once(" on ")
        .map(|(_, url)| url.to_owned())
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    assert!(!url.ends_with(":0"), "the real port: {line}");

    // The laptop writes and syncs with the server; the phone gets it from
    // there, with a conflict of its own.
    laptop.define("x", "5");
    laptop.define("l", "1");
    let r = laptop.sync(&url);
    assert_eq!((&r["sent"], &r["conflicts"]), (&2.into(), &0.into()), "{r}");
    phone.define("x", "8");
    let r = phone.run(&["sync", &url]);
    r.code(0).stdout_has("1 row in conflict");
    assert_eq!(phone.source("l"), "1");
    // The served file is readable meanwhile.
    assert_eq!(desk.source("l"), "1");
    assert_eq!(desk.conflicts(1).len(), 1);
    assert_eq!(desk.conflicts(1), phone.conflicts(1));

    // Resolved on the phone, which retires into the server: the server
    // has the resolution; the phone takes no more writes.
    phone.define("x", "9");
    phone
        .run(&["retire", &url])
        .code(0)
        .stdout_has("retired replica")
        .stdout_has(&url);
    desk.conflicts(0);
    assert_eq!(desk.source("x"), "9");
    phone
        .run(&["define", "x", "10"])
        .code(2)
        .stderr_has("retired");
    phone.run(&["sync", &url]).code(2).stderr_has("retired");
    let r = laptop.sync(&url);
    assert_eq!(r["conflicts"], 0, "{r}");
    assert_eq!(laptop.source("x"), "9");

    // Ctrl-C stops the server cleanly.
    interrupt(server);
    laptop
        .run(&["sync", &url])
        .code(2)
        .stderr_has(&url)
        .stderr_has("cannot reach");

    // `serve --json` says the same as JSON.
    let (mut server, lines) = spawn_serve(&desk, true);
    let j: Json = serde_json::from_str(&first_line(&mut server, &lines)).unwrap();
    assert_eq!(j["event"], "serving", "{j}");
    assert_eq!(j["db"], desk.path(), "{j}");
    let url = j["url"].as_str().unwrap().to_owned();
    let r = laptop.sync(&url);
    assert_eq!((&r["sent"], &r["received"]), (&0.into(), &0.into()), "{r}");
}

#[test]
fn bad_input_is_refused_with_exit_code_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (desk, laptop) = two_replicas(dir.path());

    // Nothing listens there.
    let url = nowhere();
    laptop
        .run(&["sync", &url])
        .code(2)
        .stderr_has("error: ")
        .stderr_has(&url)
        .stderr_has("cannot reach the replica server");
    let j = laptop.run(&["sync", &url, "--json"]).code(2).json();
    assert!(j["error"].as_str().is_some_and(|e| e.contains(&url)), "{j}");
    laptop.run(&["retire", &url]).code(2).stderr_has(&url);
    laptop.define("still", "1"); // a failed retire leaves it writable

    // An unrelated database: never forked, or of another family.
    let other = Replica::at(dir.path(), "other.db");
    other.define("x", "1");
    laptop
        .run(&["sync", other.path()])
        .code(2)
        .stderr_has("never forked");
    let other_fork = Replica::at(dir.path(), "other-fork.db");
    other.run(&["fork", other_fork.path()]).code(0);
    laptop
        .run(&["sync", other_fork.path()])
        .code(2)
        .stderr_has("is not a replica of this one");
    laptop
        .run(&["sync", other.path()])
        .code(2)
        .stderr_has("is not a replica of this one");

    // Forking onto an existing file leaves it alone.
    let before = std::fs::read(&other.db).unwrap();
    desk.run(&["fork", other.path()])
        .code(2)
        .stderr_has("exists already");
    assert_eq!(std::fs::read(&other.db).unwrap(), before);

    // No such file; itself; a URL that is no replica server's.
    let missing = dir.path().join("missing.db");
    laptop
        .run(&["sync", missing.to_str().unwrap()])
        .code(2)
        .stderr_has("no such file");
    assert!(!missing.exists(), "sync created the file");
    laptop
        .run(&["sync", laptop.path()])
        .code(2)
        .stderr_has("this database itself");
    laptop
        .run(&["sync", "postgres://localhost/x"])
        .code(2)
        .stderr_has("http://HOST:PORT");
    laptop
        .run(&["sync", "https://127.0.0.1:1"])
        .code(2)
        .stderr_has("plain HTTP");

    // A database that never forked has nothing to serve; a taken address
    // cannot be served on.
    let lone = Replica::at(dir.path(), "lone.db");
    lone.define("x", "1");
    lone.run_bounded(&["serve", "--listen", "127.0.0.1:0"])
        .code(2)
        .stderr_has("never forked");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    desk.run_bounded(&["serve", "--listen", &addr])
        .code(2)
        .stderr_has("cannot listen on")
        .stderr_has(&addr);
    // `serve` needs an address.
    desk.run(&["serve"]).code(2).stderr_has("--listen");

    // A database with no replicas has no conflicts.
    lone.conflicts(0);
    assert_eq!(lone.status_of("Definition")["conflicts"], 0);
}
