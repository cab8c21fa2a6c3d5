//! The throwaway test server leaves nothing behind: not when it is
//! dropped, and not when the process that started it is killed.

use rederive_postgres::testing::TestServer;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child process of [`a_killed_process_leaves_no_server_behind`].
const CHILD: &str = "REDERIVE_PG_SERVER_TEST_CHILD";

/// Whether something listens on a port of 127.0.0.1.
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

/// Waits until `done` holds, for at most 30 seconds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "{what}: still not, after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dropped_server_is_stopped_and_removed() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let server = match TestServer::start() {
        Ok(server) => server,
        Err(skip) => return skip.report("a_dropped_server_is_stopped_and_removed"),
    };
    let dir = server.directory().to_owned();
    let port = server.port();
    assert!(listening(port), "the server listens on 127.0.0.1:{port}");
    assert!(dir.join("data").is_dir());
    let url = server.new_database("Dropped Server!").unwrap();
    assert!(url.ends_with("/droppedserver_0"), "{url}");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    drop(server);
    assert!(!dir.exists(), "{} is removed", dir.display());
    assert!(!listening(port), "nothing listens on {port} any more");
}

/// The parent: starts a child process (this test binary, running
/// [`child_starts_a_server_and_waits`]), kills it once its server runs,
/// and waits for the server and its directory to go.
#[test]
fn a_killed_process_leaves_no_server_behind() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_starts_a_server_and_waits",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The child's lines, read aside: a child that never says what it did
    // must not hang this test.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest writes `test NAME ... ` before the test's own output.
            for tag in ["SERVER ", "SKIP "] {
                if let Some(at) = line.find(tag) {
                    let _ = tx.send((tag, line[at + tag.len()..].to_owned()));
                }
            }
        }
    });
    let started = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(("SKIP ", reason)) => {
            let _ = child.wait();
            return eprintln!("test a_killed_process_leaves_no_server_behind skipped: {reason}");
        }
        Ok((_, rest)) => rest
            .split_once(' ')
            .map(|(port, dir)| (port.parse::<u16>().expect("a port"), dir.to_owned())),
        Err(_) => None,
    };
    if started.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (port, dir) = started.expect("the child started a server");
    assert!(listening(port));
    child.kill().unwrap();
    child.wait().unwrap();
    eventually("the killed process's server stops", || !listening(port));
    eventually("its directory is removed", || !Path::new(&dir).exists());
}

/// Not a test of its own: the child process of
/// [`a_killed_process_leaves_no_server_behind`] (does nothing otherwise).
#[test]
fn child_starts_a_server_and_waits() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let server = match TestServer::shared() {
        Ok(server) => server,
        Err(skip) => return println!("SKIP {skip}"),
    };
    println!("SERVER {} {}", server.port(), server.directory().display());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
