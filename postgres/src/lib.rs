//! The PostgreSQL backend of rederive: the same tables, revisions,
//! provenance, leases and semantics as the embedded SQLite backend, in one
//! PostgreSQL database that worker processes on many machines share.
//!
//! ```no_run
//! use rederive_postgres::PgStore;
//! use rederive_runtime::storage::Progress;
//!
//! # fn main() -> rederive_runtime::Result<()> {
//! let store = PgStore::open("postgres://me@db-host/pipeline")?;
//! println!("at revision {}", store.revision()?);
//! # Ok(())
//! # }
//! ```
//!
//! Linking this crate in registers the `postgres://` and `postgresql://`
//! schemes (a [`rederive_runtime::storage::UrlBackend`]), so that
//! `Db::open("postgres://...")` and the CLI's `--db` reach [`PgStore`];
//! the `rederive` crate's `postgres` feature does that.
//!
//! # Tables
//!
//! The layout follows the SQLite backend's (see
//! [`rederive_runtime::sqlite`]), in PostgreSQL's types:
//!
//! - `rederive_meta`: one row: the format version, the revision counter,
//!   the epoch, and the revision of the last delete;
//! - `rederive_tables`: the catalog: each table's column fingerprint, its
//!   producer's code version, its watermark and epoch mark;
//! - one table per input table (the user's columns, `__changed_at`,
//!   `__changed_ms`) and per derived table (`__key`, the value columns,
//!   `__status`, `__error`, `__origin_key`, `__code`, `__changed_at`,
//!   `__in_N`), named by the row type, quoted so that the name keeps its
//!   case; each has an index on (`__changed_at`, key), which pages through
//!   changes in the order (`changed_at`, key);
//! - `rederive_codes`: code versions by a small id;
//! - `rederive_reads` and `rederive_tombstones`: recorded reads, and the
//!   rows read and deleted;
//! - `rederive_leases` (row leases), `rederive_table_leases` (whole-table
//!   leases of a worker that is alone) and `rederive_workers`.
//!
//! Integers are `BIGINT`, floats `DOUBLE PRECISION`, bytes `BYTEA`, and
//! text is `TEXT COLLATE "C"`: keys sort byte by byte, as SQLite and Rust
//! sort them, whatever the database's locale. The columns that hold keys
//! of any table (the lease's key, a recorded read's keys, a tombstone's
//! key, a blocked row's origin) store them as `BYTEA`: a tag, then the
//! integer's bytes or the text's (see `sql::encode_key`), so that the key
//! 5 and the text `"5"` never meet and stored keys sort as keys do.
//!
//! # Transactions
//!
//! Every method is one transaction or one consistent read. Writes
//! (`put_rows`, `delete_row`, `write_outcomes`, schema changes) run at
//! `READ COMMITTED` and begin by taking the next revision: an `UPDATE` of
//! the one row of `rederive_meta`, whose row lock they hold until they
//! commit. Writers therefore commit in the order of their revisions, so
//! that a reader that sees revision `r` sees every write up to `r` (what
//! watermarks rely on), and the checks inside a write (the fence, the
//! write guard, the root row's existence) see every write committed
//! before it. Reads that need several statements run in one `REPEATABLE
//! READ` read-only transaction; [`Rows::begin_snapshot`] keeps one open
//! across calls until a write or a lease change. A transaction that
//! PostgreSQL aborts for a deadlock or a serialization failure is run
//! again, a few times, before its error is returned.
//!
//! Time comes from the store's [`Clock`], never from the server's `now()`
//! inside a statement (tests move a manual clock). A store opened by URL
//! ([`PgStore::open`]) reads its machine's clock moved by the difference to
//! the server's, measured as it connects, so that workers on machines
//! whose clocks disagree agree on when a lease expires.
//!
//! # Claims
//!
//! Claims, heartbeats and releases take no revision, and never wait for
//! the revision lock. A claim never waits for another owner's lease:
//!
//! - A row claim locks the lease rows it may take over (its owner's, or
//!   expired ones) with `SELECT .. FOR UPDATE SKIP LOCKED`, as job queues
//!   on PostgreSQL claim jobs. Why skip rather than wait: a lease row that
//!   another transaction holds is being written under (its owner's fenced
//!   write is giving it back), taken over or given back, so the row is
//!   someone else's for now; a worker that waited would stand idle behind
//!   a whole batch's write (and workers claiming overlapping batches would
//!   queue behind one another), while passing it over as held lets it go
//!   on with other rows at once. Keys
//!   without a lease row are inserted in key order with `ON CONFLICT DO
//!   NOTHING`; the one wait this can meet is another claim's insert of the
//!   same new key, which commits at once (and two claims insert in the
//!   same order, so they never deadlock).
//! - The claimant's own leases can only be locked by its worker's
//!   heartbeat, for a moment: those it waits for, so that a heartbeat
//!   never makes a worker lose its own rows.
//! - `TableIfAlone` takes a transaction-level advisory lock on the table
//!   (`pg_try_advisory_xact_lock`); row claims take the same lock shared.
//!   A table claim and row claims of one table are thus never in progress
//!   together (the later one finds the lock taken and claims nothing, or
//!   row by row), and each sees what the other committed.
//! - The fence is checked inside the write's transaction: a row fence by
//!   deleting the owner's lease rows (`DELETE .. RETURNING`: only rows
//!   whose lease is still the owner's are written, and the lease is given
//!   back with the write); a table fence by locking the table lease
//!   `FOR KEY SHARE`, which a takeover (`FOR UPDATE`) cannot pass while
//!   the write is in progress, and a heartbeat's `UPDATE` can.
//! - A heartbeat extends its worker's table leases, its row leases with
//!   `FOR UPDATE SKIP LOCKED` (a row lease locked by another transaction
//!   is being given back or taken over: extending it would be undone),
//!   and its registration.
//!
//! # Encrypted connections
//!
//! With the `tls` feature (on by default in this crate; the `rederive`
//! crate's `postgres-tls` feature), connections are encrypted through
//! OpenSSL as libpq's connection parameters say: `sslmode` (`disable`,
//! `allow`, `prefer` (the default), `require`, `verify-ca`,
//! `verify-full`), `sslrootcert` (a file of authorities' certificates, or
//! `system`), `sslcert` and `sslkey` (a client certificate), in a URL's
//! query or among `key=value` words:
//!
//! ```no_run
//! # fn main() -> rederive_runtime::Result<()> {
//! let store = rederive_postgres::PgStore::open(
//!     "postgres://me@db.example.com/pipeline?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
//! )?;
//! # Ok(())
//! # }
//! ```
//!
//! As with libpq, `prefer` and `require` encrypt without checking who the
//! server is, unless a root certificate is given (or
//! `~/.postgresql/root.crt` exists); `verify-full` checks that the
//! server's certificate is signed by a trusted authority and names the
//! host. A certificate that is not accepted, or a server that does not
//! encrypt when `require` asks it to, fails the connection with an error
//! that says what to check. Without the feature, a mode that needs
//! encryption is refused with an error naming the feature, and `prefer`
//! connects unencrypted.
//!
//! # Limits
//!
//! Encrypted client keys (`sslpassword`) and certificate revocation lists
//! (`sslcrl`) are not supported, nor libpq's environment variables
//! (`PGSSLMODE`, ...): the `postgres` crate reads none of them. Table and
//! column names are limited to PostgreSQL's 63 bytes (longer ones are
//! refused rather than cut).
//!
//! [`Clock`]: rederive_runtime::clock::Clock
//! [`Rows::begin_snapshot`]: rederive_runtime::storage::Rows::begin_snapshot
#![warn(missing_docs)]

mod conn;
mod hints;
mod leases;
mod progress;
mod reads;
mod rows;
mod schema;
mod server_clock;
mod sql;
pub mod testing;
mod tls;

pub use conn::ServerError;

use conn::{Begin, Conn, PgResult};
use postgres::{Client, Config};
use rederive_runtime::clock::Clock;
use rederive_runtime::error::{Error, Result};
use rederive_runtime::storage::url::redact;
use rederive_runtime::storage::{Backend, Connector, Subscription, UrlBackend};
use server_clock::ServerClock;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tls::Tls;

/// The newest layout of rederive's own tables this build reads and writes.
pub const FORMAT: i64 = 1;

/// A rederive database in PostgreSQL, through one connection.
///
/// Methods take `&self`: the connection is kept behind a mutex, and a lost
/// connection is opened again by the next call (the call that met the loss
/// returns its error).
pub struct PgStore {
    conn: Mutex<Conn>,
    config: Config,
    tls: Tls,
    location: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Opens more connections to the database of a [`PgStore`], on its clock.
#[derive(Clone)]
pub struct PgConnector {
    config: Config,
    tls: Tls,
    location: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Connector for PgConnector {
    fn connect(&self) -> Result<Box<dyn Backend>> {
        let store = PgStore::connect(
            self.config.clone(),
            self.tls.clone(),
            &self.location,
            self.clock.clone(),
        )?;
        Ok(Box::new(store))
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn subscribe(&self, wake: Arc<dyn Fn() + Send + Sync>) -> Result<Option<Subscription>> {
        hints::subscribe(self, wake).map(Some)
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`,
    /// or anything else the `postgres` crate's connection strings accept)
    /// and creates rederive's own tables if they are missing.
    ///
    /// Time, for leases and change times, is the server's: this machine's
    /// clock moved by the difference to the server's, measured now, so
    /// that workers on machines whose clocks disagree agree on when a
    /// lease expires.
    pub fn open(url: &str) -> Result<PgStore> {
        let clock = Arc::new(ServerClock::default());
        let store = PgStore::open_with_clock(url, clock.clone())?;
        {
            let mut conn = store.lock()?;
            clock.measure(&mut conn)?;
        }
        Ok(store)
    }

    /// The same, with leases and change times on `clock` (the server's
    /// clock is not consulted).
    pub fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<PgStore> {
        let location = redacted(url);
        let not_a_url = |e: String| Error::NotADatabase {
            path: location.clone().into(),
            reason: format!("not a PostgreSQL connection URL ({e})"),
        };
        let (rest, tls) = tls::split(url).map_err(not_a_url)?;
        let mut config = Config::from_str(&rest).map_err(|e| not_a_url(e.to_string()))?;
        let tls = Tls::new(&tls, &mut config)
            .map_err(|e| conn::invalid(format!("cannot connect to {location}: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("rederive");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(30));
        }
        PgStore::connect(config, tls, &location, clock)
    }

    fn connect(config: Config, tls: Tls, location: &str, clock: Arc<dyn Clock>) -> Result<PgStore> {
        let client = connect(&config, &tls, location)?;
        let store = PgStore {
            conn: Mutex::new(Conn::new(client)),
            config,
            tls,
            location: location.to_owned(),
            clock,
        };
        {
            let mut conn = store.lock()?;
            schema::init(&mut conn, &store.location)?;
        }
        Ok(store)
    }

    /// Where the database is: its URL without a password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The connection, opened again if it was lost.
    fn lock(&self) -> Result<MutexGuard<'_, Conn>> {
        let mut guard = match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A panic left the connection in an unknown state (perhaps
                // inside a transaction): start over on a new one.
                self.conn.clear_poison();
                let mut guard = poisoned.into_inner();
                guard.replace_client(connect(&self.config, &self.tls, &self.location)?);
                guard
            }
        };
        if guard.is_closed() {
            guard.replace_client(connect(&self.config, &self.tls, &self.location)?);
        }
        Ok(guard)
    }

    /// One read statement (inside the snapshot, if one is held).
    fn read<T>(&self, body: impl FnOnce(&mut Conn) -> PgResult<T>) -> Result<T> {
        Ok(self.lock()?.read(body)?)
    }

    /// One write transaction (which ends a snapshot).
    fn write<T>(&self, body: impl FnMut(&mut Conn) -> PgResult<T>) -> Result<T> {
        Ok(self.lock()?.transaction(Begin::Write, body)?)
    }

    /// One statement that writes, outside any snapshot.
    fn write_one<T>(&self, body: impl FnOnce(&mut Conn) -> PgResult<T>) -> Result<T> {
        let mut conn = self.lock()?;
        conn.end_snapshot()?;
        Ok(conn.read(body)?)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

impl Backend for PgStore {
    fn connector(&self) -> Option<Arc<dyn Connector>> {
        Some(Arc::new(PgConnector {
            config: self.config.clone(),
            tls: self.tls.clone(),
            location: self.location.clone(),
            clock: self.clock.clone(),
        }))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}

/// Opens a connection.
fn connect(config: &Config, tls: &Tls, location: &str) -> Result<Client> {
    tls.connect(config).map_err(|e| {
        let mut what = e.to_string();
        if let Some(cause) = std::error::Error::source(&e) {
            what = format!("{what}: {cause}");
        }
        let hint = tls::hint(&what);
        conn::storage_with_hint(e, Some(format!("cannot connect to {location}")), hint)
    })
}

/// A connection string for messages: without a password, whether in a
/// URL's user part (`user:secret@`) or among its parameters
/// (`?password=secret`), or in a `key=value` string (`password=secret`).
pub fn redacted(url: &str) -> String {
    if !url.contains("://") {
        let words: Vec<String> = url
            .split_whitespace()
            .map(|w| match w.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => w.to_owned(),
            })
            .collect();
        return words.join(" ");
    }
    let url = redact(url);
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn open_url(url: &str) -> Result<Box<dyn Backend>> {
    Ok(Box::new(PgStore::open(url)?))
}

inventory::submit! {
    UrlBackend {
        schemes: &["postgres", "postgresql"],
        feature: "postgres",
        open: open_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("postgres://me:secret@host/db"),
            "postgres://me:***@host/db"
        );
        assert_eq!(
            redacted("postgres://me@host/db?sslmode=disable&password=secret"),
            "postgres://me@host/db?sslmode=disable&password=***"
        );
        assert_eq!(redacted("postgres://host/db"), "postgres://host/db");
        assert_eq!(
            redacted("host=h user=me password=secret dbname=d"),
            "host=h user=me password=*** dbname=d"
        );
    }

    #[test]
    fn a_bad_url_is_no_database() {
        let Err(e) = PgStore::open("postgres://me:secret@host:notaport/db") else {
            panic!("a port that is no number");
        };
        let m = e.to_string();
        assert!(m.contains("not a PostgreSQL connection URL"), "{m}");
        assert!(!m.contains("secret"), "{m}");
    }
}
