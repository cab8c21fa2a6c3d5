//! Encrypted connections against a real server that accepts them: libpq's
//! `sslmode`s, certificates that are and are not accepted, and a server
//! that does not encrypt.
#![cfg(feature = "tls")]

mod common;

use common::SRC;
use rederive_postgres::testing::{self, TestServer};
use rederive_postgres::PgStore;
use rederive_runtime::storage::{Backend, Progress, Values};
use rederive_runtime::value::{Key, Value};
use rederive_runtime::{Ctx, Db};
use std::sync::Arc;
use std::time::Duration;

/// Whether the connection of `application_name` to `database` is encrypted,
/// as the server sees it.
fn encrypted(admin: &mut postgres::Client, database: &str, application_name: &str) -> bool {
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = $2",
            &[&database, &application_name],
        )
        .expect("pg_stat_ssl");
    assert_eq!(rows.len(), 1, "one connection of {application_name}");
    rows[0].get(0)
}

/// A new server that encrypts (or `None` after reporting that `test`
/// skipped), a new database on it: the server, the database's URL and name,
/// and the file of the authority that signed the server's certificate.
fn encrypting_server(test: &str) -> Option<(TestServer, String, String, String)> {
    let server = match TestServer::start_with_tls() {
        Ok(server) => server,
        Err(skip) => {
            skip.report(test);
            return None;
        }
    };
    let url = server.new_database(test).unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let ca = server
        .ca_file()
        .expect("a server with TLS has an authority");
    let ca = ca.display().to_string();
    Some((server, url, database, ca))
}

#[test]
fn sslmodes_encrypt_and_check_certificates_as_libpq_does() {
    let Some((server, _, database, ca)) = encrypting_server("tls") else {
        return;
    };
    let port = server.port();
    let mut admin = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    let at =
        |host: &str, params: &str| format!("postgres://postgres@{host}:{port}/{database}?{params}");

    // Each mode that connects, and whether the server sees it encrypted.
    let cases = [
        ("plain", at("127.0.0.1", "sslmode=disable"), false),
        ("default", at("127.0.0.1", "connect_timeout=10"), true),
        ("allow", at("127.0.0.1", "sslmode=allow"), true),
        ("require", at("127.0.0.1", "sslmode=require"), true),
        (
            "verify_ca",
            at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
            true,
        ),
        (
            "verify_full",
            at(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            true,
        ),
        (
            "words",
            format!(
                "host=localhost port={port} user=postgres dbname={database} \
                 sslmode=verify-full sslrootcert='{ca}'"
            ),
            true,
        ),
    ];
    let mut stores = Vec::new();
    for (name, conn, expect) in &cases {
        let app = format!("tls_{name}");
        let conn = match conn.contains("://") {
            true => format!("{conn}&application_name={app}"),
            false => format!("{conn} application_name={app}"),
        };
        let store = PgStore::open(&conn).unwrap_or_else(|e| panic!("{name}: {e}"));
        store.revision().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(encrypted(&mut admin, &database, &app), *expect, "{name}");
        stores.push(store);
    }

    // verify-full checks the name: the certificate names localhost, not
    // 127.0.0.1 (which verify-ca accepted above).
    let e = PgStore::open(&at(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("certificate was not accepted"), "{e}");
    assert!(
        e.contains("cannot connect to postgres://postgres@127.0.0.1"),
        "{e}"
    );

    // An authority that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.crt");
    testing::write_unrelated_authority(&other).unwrap();
    // The message of a connection to localhost with `params` refused.
    let refused = |params: String| match PgStore::open(&at("localhost", &params)) {
        Ok(_) => panic!("{params} connected"),
        Err(e) => e.to_string(),
    };
    for mode in ["verify-ca", "verify-full", "require"] {
        let e = refused(format!("sslmode={mode}&sslrootcert={}", other.display()));
        assert!(e.contains("certificate was not accepted"), "{mode}: {e}");
    }

    // Files that are missing or wrong are named.
    let missing = dir.path().join("missing.crt");
    let e = refused(format!(
        "sslmode=verify-full&sslrootcert={}",
        missing.display()
    ));
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let e = refused(format!("sslmode=require&sslcert={}", other.display()));
    assert!(e.contains("has no key: give sslkey=FILE"), "{e}");
    let e = PgStore::open(&at("localhost", "sslmode=verify-full")).unwrap_err();
    assert!(
        std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".postgresql/root.crt"))
            .is_some_and(|p| p.exists())
            || e.to_string().contains("give sslrootcert=FILE"),
        "{e}"
    );
}

#[test]
fn require_refuses_a_server_that_does_not_encrypt() {
    let Some(url) = testing::database_or_skip("require_refuses_plain") else {
        return;
    };
    // The shared server has `ssl` off.
    let e = PgStore::open(&format!("{url}?sslmode=require"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not accept encrypted connections"), "{e}");
    // The default, prefer, connects unencrypted.
    let store = PgStore::open(&url).unwrap();
    store.revision().unwrap();
}

/// `Len`: the body's length.
fn len(_: &Ctx<'_>, inputs: Vec<Vec<Value>>) -> Result<Vec<Value>, String> {
    match inputs.first().and_then(|row| row.get(1)) {
        Some(Value::Text(body)) => Ok(vec![Value::Integer(body.len() as i64)]),
        other => Err(format!("no body: {other:?}")),
    }
}

/// The engine over verify-full: the rows it computes, the more connections
/// it opens (the connector keeps the TLS settings), and the listening
/// connection of `watch`, all encrypted.
#[test]
fn an_encrypted_database_runs_the_engine_and_its_listener() {
    let Some((server, url, database, ca)) = encrypting_server("tls_engine") else {
        return;
    };
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        url.replace("127.0.0.1", "localhost")
    );
    let store = PgStore::open(&url).unwrap();
    let connector = store
        .connector()
        .expect("PostgreSQL opens more connections");
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let _subscription = connector
        .subscribe(Arc::new(move || {
            let _ = tx.lock().unwrap().send(());
        }))
        .unwrap()
        .expect("PostgreSQL hints at changes");
    let db = Db::open_backend(Box::new(store), common::graph("tls_tests", "len-1", len)).unwrap();
    let other = connector.connect().unwrap();
    let rows: Vec<Vec<Value>> = (0..500)
        .map(|k| vec![Value::Integer(k), Value::Text("x".repeat(k as usize % 5))])
        .collect();
    other.put_rows(&SRC, &rows).unwrap();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the write's notification reaches the listener");
    let report = db.refresh().unwrap();
    assert_eq!(report.computed, 500);
    let g = common::graph("tls_tests", "len-1", len);
    let stored = other
        .load(
            &g,
            &[g.table_id("Len").unwrap()],
            &Key::Int(13),
            Values::All,
        )
        .unwrap();
    assert_eq!(stored[0].as_ref().unwrap().values, [Value::Integer(3)]);

    let mut admin = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    let seen: Vec<(String, bool)> = admin
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a \
             USING (pid) WHERE a.datname = $1",
            &[&database],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        seen.len() >= 3,
        "the store, the listener and another: {seen:?}"
    );
    assert!(seen.iter().all(|(_, ssl)| *ssl), "{seen:?}");
}
