//! One connection and how statements run on it: prepared statements
//! cached by their text, transactions begun and ended by hand (so that a
//! read transaction can stay open across calls for a snapshot), retries of
//! transactions that PostgreSQL aborted for a deadlock or a serialization
//! failure, and the errors that leave the crate.

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use rederive_runtime::error::Error;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Parameters of one statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// An owned parameter, for statements whose parameters are built at run
/// time (arrays of column values).
pub(crate) type Param = Box<dyn ToSql + Sync>;

/// Borrows owned parameters as a statement takes them.
pub(crate) fn borrow(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref()).collect()
}

/// How many times a transaction that PostgreSQL aborted for a deadlock or
/// a serialization failure is run again before the error is returned.
const ATTEMPTS: u32 = 6;

/// An error of PostgreSQL (or of the connection to it), as it leaves this
/// crate inside [`Error::Storage`]: its message says what the server said
/// (severity, SQLSTATE, message, detail and hint), never a password.
#[derive(Debug)]
pub struct ServerError {
    context: Option<String>,
    source: postgres::Error,
    /// What to check, after the error itself.
    hint: Option<&'static str>,
}

impl ServerError {
    /// The SQLSTATE of an error the server reported (`None` for a lost
    /// connection and other client-side errors).
    pub fn sql_state(&self) -> Option<&str> {
        self.source.code().map(SqlState::code)
    }

    /// Whether the connection to the server is gone.
    pub fn is_closed(&self) -> bool {
        self.source.is_closed()
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(context) = &self.context {
            write!(f, "{context}: ")?;
        }
        match self.source.as_db_error() {
            Some(db) => {
                write!(
                    f,
                    "PostgreSQL {} {}: {}",
                    db.severity(),
                    db.code().code(),
                    db.message()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                if let Some(hint) = db.hint() {
                    write!(f, "; hint: {hint}")?;
                }
                Ok(())
            }
            None => {
                write!(f, "{}", self.source)?;
                // The client's own errors keep their cause one level down.
                if let Some(cause) = std::error::Error::source(&self.source) {
                    write!(f, ": {cause}")?;
                }
                if let Some(hint) = self.hint {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A PostgreSQL error as the runtime's [`Error::Storage`].
pub(crate) fn storage(e: postgres::Error, context: Option<String>) -> Error {
    storage_with_hint(e, context, None)
}

/// The same, with a word on what to check (for the client's own errors,
/// such as a failed handshake).
pub(crate) fn storage_with_hint(
    e: postgres::Error,
    context: Option<String>,
    hint: Option<&'static str>,
) -> Error {
    Error::Storage(Box::new(ServerError {
        context,
        source: e,
        hint,
    }))
}

/// A storage error of ours (bad input the server never saw).
pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::Storage(message.into().into())
}

/// An error inside this crate: PostgreSQL's, or one of the runtime's.
#[derive(Debug)]
pub(crate) enum PgError {
    Pg(postgres::Error),
    Ours(Error),
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        PgError::Pg(e)
    }
}

impl From<Error> for PgError {
    fn from(e: Error) -> Self {
        PgError::Ours(e)
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Pg(e) => storage(e, None),
            PgError::Ours(e) => e,
        }
    }
}

/// `Result` inside the crate.
pub(crate) type PgResult<T> = std::result::Result<T, PgError>;

impl PgError {
    /// Whether running the transaction again may succeed: PostgreSQL
    /// chose it as a deadlock's victim, or could not serialize it, or a
    /// prepared statement outlived a change of its table's columns.
    fn retryable(&self) -> bool {
        let PgError::Pg(e) = self else {
            return false;
        };
        match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => true,
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => true,
            Some(c) if *c == SqlState::FEATURE_NOT_SUPPORTED => e
                .as_db_error()
                .is_some_and(|d| d.message().contains("cached plan")),
            _ => false,
        }
    }

    /// Whether the error means the connection is gone: the server ended it
    /// (an administrator, a shutdown, a crash: SQLSTATE class 57P), a
    /// connection exception (class 08), or the socket failed. The client
    /// may not know yet (it notices the closed socket on the next call).
    fn ends_connection(&self) -> bool {
        let PgError::Pg(e) = self else {
            return false;
        };
        if e.is_closed() {
            return true;
        }
        match e.code() {
            Some(c) => c.code().starts_with("57P") || c.code().starts_with("08"),
            None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
        }
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// A write: `READ COMMITTED`, so that each statement sees what other
    /// transactions committed before it, in particular after waiting for
    /// the lock on the revision counter.
    Write,
    /// Several reads that must agree: one snapshot, read only.
    Read,
}

impl Begin {
    fn sql(self) -> &'static str {
        match self {
            Begin::Write => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Begin::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }
}

/// One connection and what lives with it.
pub(crate) struct Conn {
    client: Client,
    /// Prepared statements by their text.
    statements: HashMap<String, Statement>,
    /// Whether a read transaction is held open for a snapshot
    /// ([`rederive_runtime::storage::Rows::begin_snapshot`]).
    snapshot: bool,
    /// Revisions taken by the transaction in progress.
    pending_revisions: i64,
    /// Revisions taken by this connection's committed transactions: the
    /// change token leaves them out (see `progress.rs`).
    pub(crate) own_revisions: i64,
    /// Code versions by id (ids never change once given).
    pub(crate) codes: HashMap<i64, Arc<str>>,
    /// Ids of code versions, as found in `rederive_codes`.
    pub(crate) code_ids: HashMap<String, i64>,
    /// An error said the connection is gone (see
    /// [`PgError::ends_connection`]): the next call opens another.
    lost: bool,
}

impl Conn {
    pub(crate) fn new(client: Client) -> Conn {
        Conn {
            client,
            statements: HashMap::new(),
            snapshot: false,
            pending_revisions: 0,
            own_revisions: 0,
            codes: HashMap::new(),
            code_ids: HashMap::new(),
            lost: false,
        }
    }

    /// Replaces a lost connection; what belonged to the old one goes.
    pub(crate) fn replace_client(&mut self, client: Client) {
        self.client = client;
        self.lost = false;
        self.statements.clear();
        self.snapshot = false;
        self.pending_revisions = 0;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lost || self.client.is_closed()
    }

    /// Notes an error that ended the connection.
    fn note(&mut self, e: &PgError) {
        self.lost |= e.ends_connection();
    }

    /// The prepared statement of `sql`, prepared once per connection.
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// The types the server inferred for the parameters of `sql`.
    pub(crate) fn param_types(&mut self, sql: &str) -> PgResult<Vec<postgres::types::Type>> {
        Ok(self.statement(sql)?.params().to_vec())
    }

    /// Forgets every prepared statement (after tables changed).
    pub(crate) fn forget_statements(&mut self) {
        self.statements.clear();
    }

    pub(crate) fn query(&mut self, sql: &str, params: Params<'_>) -> PgResult<Vec<Row>> {
        let s = self.statement(sql)?;
        Ok(self.client.query(&s, params)?)
    }

    pub(crate) fn query_one(&mut self, sql: &str, params: Params<'_>) -> PgResult<Row> {
        let s = self.statement(sql)?;
        Ok(self.client.query_one(&s, params)?)
    }

    pub(crate) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> PgResult<Option<Row>> {
        let s = self.statement(sql)?;
        Ok(self.client.query_opt(&s, params)?)
    }

    pub(crate) fn execute(&mut self, sql: &str, params: Params<'_>) -> PgResult<u64> {
        let s = self.statement(sql)?;
        Ok(self.client.execute(&s, params)?)
    }

    /// Runs statements without parameters (DDL), unprepared.
    pub(crate) fn batch(&mut self, sql: &str) -> PgResult<()> {
        Ok(self.client.batch_execute(sql)?)
    }

    /// Counts a revision taken by the transaction in progress.
    pub(crate) fn took_revision(&mut self) {
        self.pending_revisions += 1;
    }

    /// Ends the read transaction of a snapshot, if one is held.
    pub(crate) fn end_snapshot(&mut self) -> PgResult<()> {
        if std::mem::take(&mut self.snapshot) {
            self.client.batch_execute("COMMIT")?;
        }
        Ok(())
    }

    /// Opens the read transaction of a snapshot, unless one is held.
    pub(crate) fn begin_snapshot(&mut self) -> PgResult<()> {
        if !self.snapshot {
            self.client.batch_execute(Begin::Read.sql())?;
            self.snapshot = true;
        }
        Ok(())
    }

    /// After an error: a snapshot's transaction is aborted, so it goes.
    fn abandon_snapshot(&mut self) {
        if std::mem::take(&mut self.snapshot) && !self.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    /// Runs `body` as one statement or, inside a snapshot, in it.
    pub(crate) fn read<T>(&mut self, body: impl FnOnce(&mut Conn) -> PgResult<T>) -> PgResult<T> {
        let out = body(self);
        if let Err(e) = &out {
            self.note(e);
            self.abandon_snapshot();
            self.statements.clear();
        }
        out
    }

    /// Runs `body` in one transaction that begins as `begin` says (reads
    /// inside a snapshot join it), committed if `body` succeeds and rolled
    /// back otherwise; a transaction PostgreSQL aborted for a deadlock or
    /// a serialization failure runs again, a few times.
    pub(crate) fn transaction<T>(
        &mut self,
        begin: Begin,
        mut body: impl FnMut(&mut Conn) -> PgResult<T>,
    ) -> PgResult<T> {
        if begin == Begin::Read && self.snapshot {
            return self.read(body);
        }
        if begin == Begin::Write {
            self.end_snapshot()?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self.attempt(begin, &mut body);
            match out {
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    self.statements.clear();
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => {
                    self.note(&e);
                    self.statements.clear();
                    return Err(e);
                }
                Ok(v) => return Ok(v),
            }
        }
    }

    fn attempt<T>(
        &mut self,
        begin: Begin,
        body: &mut impl FnMut(&mut Conn) -> PgResult<T>,
    ) -> PgResult<T> {
        self.pending_revisions = 0;
        self.client.batch_execute(begin.sql())?;
        let out = body(self).and_then(|v| {
            // A transaction that took a revision tells listeners as it
            // commits (watch mode's hint), in the same round trip.
            let commit = if self.pending_revisions > 0 {
                crate::hints::NOTIFY_AND_COMMIT
            } else {
                "COMMIT"
            };
            self.client.batch_execute(commit)?;
            Ok(v)
        });
        match out {
            Ok(v) => {
                self.own_revisions += std::mem::take(&mut self.pending_revisions);
                Ok(v)
            }
            Err(e) => {
                self.pending_revisions = 0;
                self.note(&e);
                if !self.is_closed() {
                    // Nothing to roll back when COMMIT itself failed: the
                    // server ended the transaction already.
                    let _ = self.client.batch_execute("ROLLBACK");
                }
                Err(e)
            }
        }
    }
}

/// How long to wait before attempt `n + 1`: growing, with jitter so that
/// two transactions that deadlocked do not meet again in step.
fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = 5u64 << attempt.min(6);
    Duration::from_millis(base + u64::from(nanos % 7_919) % base.max(1))
}
