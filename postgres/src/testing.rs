//! A throwaway PostgreSQL server for tests and demos.
//!
//! [`TestServer::start`] finds PostgreSQL's programs (`$REDERIVE_PG_BIN`,
//! then `/usr/lib/postgresql/<version>/bin`, newest first, then `PATH`),
//! runs `initdb` into a new temporary directory, and starts a server that
//! listens on a free port of 127.0.0.1 only (and on a Unix socket in its
//! own directory), with `trust` authentication for the `postgres` user.
//! It is built for speed, not safety: `fsync`, `synchronous_commit` and
//! `full_page_writes` are off (a crash of the machine may lose or corrupt
//! its data, which nobody keeps), and `max_connections` is 200 so that
//! tests can run in parallel, each in a database of its own
//! ([`TestServer::new_database`]). PostgreSQL refuses to run as root: when
//! the tests do, the server runs as the `postgres` user, which owns its
//! directory.
//!
//! # Stopping
//!
//! Dropping a [`TestServer`] stops the server (`pg_ctl stop -m fast`) and
//! removes its directory. A server shared by a whole test binary
//! ([`TestServer::shared`]) lives in a static, which is never dropped: it
//! is stopped all the same when the process ends, however it ends. Each
//! server has a small supervisor (`sh`) in its own process group, which
//! waits for the end of a pipe that only the test process holds; when the
//! process exits (normally, by a panic, or killed), the kernel closes the
//! pipe, and the supervisor stops the server and removes the directory.
//!
//! # Skipping
//!
//! Where PostgreSQL is not installed, [`TestServer::start`] returns a
//! [`Skip`] whose message says how to install it; a test then reports
//! that it skipped ([`Skip::report`], or [`database_or_skip`], which does
//! both) and passes. Where the environment variable
//! `REDERIVE_REQUIRE_POSTGRES=1` is set (CI sets it), a missing PostgreSQL
//! is a failure instead.
//!
//! ```no_run
//! use rederive_postgres::testing;
//!
//! #[test]
//! fn stores_rows() {
//!     let Some(url) = testing::database_or_skip("stores_rows") else {
//!         return;
//!     };
//!     let store = rederive_postgres::PgStore::open(&url).unwrap();
//!     // ...
//! }
//! ```

use std::fmt;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The message of a [`Skip`] for a machine without PostgreSQL.
pub const NOT_INSTALLED: &str =
    "PostgreSQL is not installed: `apt-get install postgresql` (Debian) to run these tests";

/// The environment variable that turns a missing PostgreSQL from a
/// [`Skip`] into a failure (when set to `1`).
pub const REQUIRE_VAR: &str = "REDERIVE_REQUIRE_POSTGRES";

/// The environment variable naming the directory of PostgreSQL's programs
/// (`initdb`, `pg_ctl`), searched before the usual places.
pub const BIN_VAR: &str = "REDERIVE_PG_BIN";

/// Why a test that needs PostgreSQL does not run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    reason: String,
}

impl Skip {
    /// The reason, for people.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Says on the terminal that `test` skipped, and why. Written to the
    /// process's standard error directly, so that the test harness does
    /// not swallow it as it does a passing test's output.
    pub fn report(&self, test: &str) {
        let _ = writeln!(std::io::stderr(), "test {test} skipped: {}", self.reason);
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Skip {}

/// Whether a missing PostgreSQL is a failure here (`REDERIVE_REQUIRE_POSTGRES=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v.trim() == "1")
}

/// Why a server did not start.
#[derive(Debug)]
enum StartError {
    /// PostgreSQL's programs were not found.
    NotInstalled,
    /// They were, and something went wrong.
    Failed(String),
}

impl StartError {
    /// A skip, or the panic a failure is.
    fn into_skip(self) -> Skip {
        match self {
            StartError::NotInstalled if required() => panic!(
                "{REQUIRE_VAR}=1, and {NOT_INSTALLED} (or set {BIN_VAR} to the directory of initdb and pg_ctl)"
            ),
            StartError::NotInstalled => Skip {
                reason: NOT_INSTALLED.to_owned(),
            },
            StartError::Failed(message) => panic!("the test PostgreSQL server did not start: {message}"),
        }
    }
}

/// A PostgreSQL server of its own, in a temporary directory, stopped and
/// removed when dropped (see the [module docs](self)).
pub struct TestServer {
    root: PathBuf,
    port: u16,
    /// The certificate of the authority that signed the server's, for a
    /// server that accepts encrypted connections.
    ca_file: Option<PathBuf>,
    /// The supervisor, and the pipe whose end tells it to stop the server.
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
    /// A connection to the `postgres` database, for creating databases.
    admin: Mutex<Option<postgres::Client>>,
    databases: AtomicUsize,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("root", &self.root)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts a new server, stopped when the value is dropped.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is installed but the server does not start (with
    /// the server's log), and when it is not installed and
    /// `REDERIVE_REQUIRE_POSTGRES=1` is set.
    pub fn start() -> Result<TestServer, Skip> {
        start(false, false).map_err(StartError::into_skip)
    }

    /// Starts a new server that loses no committed transaction when it is
    /// stopped at once ([`TestServer::restart_immediately`]): it writes
    /// its WAL at every commit (`synchronous_commit = on`; still without
    /// `fsync`, since the machine itself does not crash). The others,
    /// faster, may lose the last commits to an immediate stop.
    ///
    /// # Panics
    ///
    /// As [`TestServer::start`].
    pub fn start_crash_safe() -> Result<TestServer, Skip> {
        start(false, true).map_err(StartError::into_skip)
    }

    /// Starts a new server that also accepts encrypted connections (with
    /// the `tls` feature): its certificate names `localhost` (not
    /// `127.0.0.1`), and is signed by a new authority whose certificate is
    /// [`TestServer::ca_file`]. Unencrypted connections are accepted too.
    ///
    /// # Panics
    ///
    /// As [`TestServer::start`].
    #[cfg(feature = "tls")]
    pub fn start_with_tls() -> Result<TestServer, Skip> {
        start(true, false).map_err(StartError::into_skip)
    }

    /// The certificate (PEM) of the authority that signed the server's,
    /// for a server started by [`TestServer::start_with_tls`].
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The server shared by every test of this process: started by the
    /// first call, stopped when the process ends.
    ///
    /// # Panics
    ///
    /// As [`TestServer::start`] (every call panics again, with the first
    /// call's message).
    pub fn shared() -> Result<&'static TestServer, Skip> {
        static SHARED: OnceLock<Result<TestServer, String>> = OnceLock::new();
        let started = SHARED.get_or_init(|| match start(false, false) {
            Ok(server) => Ok(server),
            Err(StartError::NotInstalled) => Err(String::new()),
            Err(StartError::Failed(m)) => Err(m),
        });
        match started {
            Ok(server) => Ok(server),
            Err(m) if m.is_empty() => Err(StartError::NotInstalled.into_skip()),
            Err(m) => Err(StartError::Failed(m.clone()).into_skip()),
        }
    }

    /// The URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of one of the server's databases.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temporary directory (its data, socket and log), removed
    /// when the server stops.
    pub fn directory(&self) -> &Path {
        &self.root
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// Creates a new, empty database, named after `name_hint` (letters,
    /// digits and `_` of it) and made unique, and returns its URL.
    pub fn new_database(&self, name_hint: &str) -> rederive_runtime::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let mut name: String = name_hint
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            name.insert(0, 'd');
        }
        let name = format!("{name}_{n}");
        let mut admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if admin.as_ref().is_none_or(|c| c.is_closed()) {
            *admin = Some(
                postgres::Client::connect(&self.url(), postgres::NoTls).map_err(|e| {
                    crate::conn::storage(e, Some(format!("cannot connect to {}", self.url())))
                })?,
            );
        }
        let Some(client) = admin.as_mut() else {
            unreachable!("connected above");
        };
        client
            .batch_execute(&format!("CREATE DATABASE {}", crate::sql::quote(&name)))
            .map_err(|e| crate::conn::storage(e, Some(format!("cannot create database {name}"))))?;
        Ok(self.database_url(&name))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m
    /// immediate`: every connection cut, no checkpoint; the server
    /// recovers from its WAL at the next start; start it with
    /// [`TestServer::start_crash_safe`] to keep every commit), leaves it down for
    /// `down`, and starts it again with the same data on the same port.
    /// Returns the error (with the server's log) when it does not come
    /// back.
    pub fn restart_immediately(&self, down: std::time::Duration) -> Result<(), String> {
        let programs = Programs::find().ok_or(NOT_INSTALLED)?;
        let user = server_user().map_err(|e| format!("{e:?}"))?;
        *self.admin.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let data = self.root.join("data");
        let mut stop = command(&programs.pg_ctl, user, &self.root);
        stop.arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"]);
        run(stop, "pg_ctl stop").map_err(|e| format!("{e:?}"))?;
        std::thread::sleep(down);
        let log = self.root.join("server.log");
        let mut start = command(&programs.pg_ctl, user, &self.root);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .process_group(0);
        run(start, "pg_ctl start")
            .map_err(|e| format!("{e:?}; the server's log:\n{}", tail(&log)))?;
        wait_until_ready(&self.url()).map_err(|e| format!("{e}; the server's log:\n{}", tail(&log)))
    }

    /// Stops the server and removes its directory, now.
    fn stop(&self) {
        *self.admin.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let taken = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut child, pipe)) = taken {
            // The end of the pipe is the supervisor's signal.
            drop(pipe);
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new database on the server shared by this process, or `None` after
/// reporting that `test` skipped (see [`Skip`]).
///
/// # Panics
///
/// As [`TestServer::shared`], and when the database cannot be created.
pub fn database_or_skip(test: &str) -> Option<String> {
    match TestServer::shared() {
        Ok(server) => Some(
            server
                .new_database(test)
                .unwrap_or_else(|e| panic!("creating a database for {test}: {e}")),
        ),
        Err(skip) => {
            skip.report(test);
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Starting.

/// PostgreSQL's programs.
struct Programs {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Programs {
    fn in_dir(dir: &Path) -> Option<Programs> {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (initdb.is_file() && pg_ctl.is_file()).then_some(Programs { initdb, pg_ctl })
    }

    /// `$REDERIVE_PG_BIN`, then Debian's versioned directories (newest
    /// first), then `PATH`.
    fn find() -> Option<Programs> {
        if let Some(dir) = std::env::var_os(BIN_VAR) {
            return Programs::in_dir(Path::new(&dir));
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        let path = std::env::var_os("PATH").unwrap_or_default();
        versions
            .into_iter()
            .map(|(_, dir)| dir)
            .chain(std::env::split_paths(&path))
            .find_map(|dir| Programs::in_dir(&dir))
    }
}

/// The user the server runs as: `None` for this process's own, or the
/// `postgres` user's ids when this process runs as root.
fn server_user() -> Result<Option<(u32, u32)>, StartError> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    match id(&["-u"]) {
        Some(0) => match (id(&["-u", "postgres"]), id(&["-g", "postgres"])) {
            (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
            _ => Err(StartError::Failed(
                "running as root, PostgreSQL must run as another user, and there is no `postgres` user"
                    .into(),
            )),
        },
        Some(_) => Ok(None),
        None => Err(StartError::Failed("cannot run `id -u`".into())),
    }
}

/// A command run as the server's user, from its directory.
fn command(program: &Path, user: Option<(u32, u32)>, root: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(root)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Runs a command to its end; its output is the error when it fails.
fn run(mut cmd: Command, what: &str) -> Result<(), StartError> {
    let out = cmd
        .output()
        .map_err(|e| StartError::Failed(format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(StartError::Failed(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// A new directory of its own under the system's temporary directory.
fn new_root() -> Result<PathBuf, StartError> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..100 {
        let root = std::env::temp_dir().join(format!(
            "rederive-pg-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        match std::fs::create_dir(&root) {
            Ok(()) => return Ok(root),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(StartError::Failed(format!(
                    "cannot create {}: {e}",
                    root.display()
                )))
            }
        }
    }
    Err(StartError::Failed(
        "cannot find a new temporary directory".into(),
    ))
}

/// The supervisor's script: waits for the end of its standard input (the
/// test process's end of the pipe), then stops the server if it runs and
/// removes the directory. Signals from the terminal do not stop it early.
const SUPERVISOR: &str = r#"trap '' HUP INT QUIT TERM
read _ignored
if [ -f "$1/postmaster.pid" ]; then "$2" -D "$1" -m fast -w -t 60 stop >/dev/null 2>&1; fi
rm -rf "$3"
"#;

/// A port of 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16, StartError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StartError::Failed(format!("cannot find a free port: {e}")))
}

fn start(tls: bool, crash_safe: bool) -> Result<TestServer, StartError> {
    let programs = Programs::find().ok_or(StartError::NotInstalled)?;
    let user = server_user()?;
    let root = new_root()?;
    let fail = |root: &Path, e: String| {
        let _ = std::fs::remove_dir_all(root);
        StartError::Failed(e)
    };
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).map_err(|e| {
            fail(
                &root,
                format!("cannot give {} to postgres: {e}", root.display()),
            )
        })?;
    }
    let data = root.join("data");
    // The supervisor first: from now on, the directory goes with the
    // process, whatever happens next.
    let mut supervisor = Command::new("/bin/sh");
    supervisor
        .args(["-c", SUPERVISOR, "rederive-pg-supervisor"])
        .arg(&data)
        .arg(&programs.pg_ctl)
        .arg(&root)
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some((uid, gid)) = user {
        supervisor.uid(uid).gid(gid);
    }
    let mut child = supervisor
        .spawn()
        .map_err(|e| fail(&root, format!("cannot start the supervisor: {e}")))?;
    let Some(pipe) = child.stdin.take() else {
        return Err(fail(&root, "the supervisor has no standard input".into()));
    };
    let mut server = TestServer {
        root: root.clone(),
        port: 0,
        ca_file: None,
        supervisor: Mutex::new(Some((child, pipe))),
        admin: Mutex::new(None),
        databases: AtomicUsize::new(0),
    };
    // From here on, dropping `server` stops and removes everything.
    let sock = root.join("sock");
    std::fs::create_dir(&sock)
        .map_err(|e| StartError::Failed(format!("cannot create {}: {e}", sock.display())))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).map_err(|e| {
            StartError::Failed(format!("cannot give {} to postgres: {e}", sock.display()))
        })?;
    }
    let mut initdb = command(&programs.initdb, user, &root);
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "-N",
    ]);
    run(initdb, "initdb")?;
    let settings = format!(
        "\n# rederive's throwaway test server: fast, not safe.\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         fsync = off\n\
         synchronous_commit = {}\n\
         full_page_writes = off\n\
         max_connections = 200\n\
         shared_buffers = 32MB\n",
        sock.display(),
        if crash_safe { "on" } else { "off" }
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(settings.as_bytes()))
        .map_err(|e| StartError::Failed(format!("cannot configure the server: {e}")))?;
    if tls {
        #[cfg(feature = "tls")]
        {
            server.ca_file = Some(certificates::write(&root, &data, user)?);
        }
    }
    let log = root.join("server.log");
    let mut last_error = String::new();
    // A port found free may be taken before the server binds it: try
    // another.
    for _ in 0..5 {
        let port = free_port()?;
        let mut pg_ctl = command(&programs.pg_ctl, user, &root);
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port}"))
            .arg("start")
            .process_group(0);
        match run(pg_ctl, "pg_ctl start") {
            Ok(()) => {
                server.port = port;
                wait_until_ready(&server.url()).map_err(|e| {
                    StartError::Failed(format!("{e}; the server's log:\n{}", tail(&log)))
                })?;
                return Ok(server);
            }
            Err(StartError::Failed(e)) => last_error = e,
            Err(e) => return Err(e),
        }
    }
    Err(StartError::Failed(format!(
        "{last_error}; the server's log:\n{}",
        tail(&log)
    )))
}

/// Waits until the server accepts a connection.
fn wait_until_ready(url: &str) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(client) => {
                let _ = client.close();
                return Ok(());
            }
            Err(e) if Instant::now() > until => {
                return Err(format!("the server does not accept connections: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The end of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Certificates for a server that accepts encrypted connections.
#[cfg(feature = "tls")]
mod certificates {
    use super::StartError;
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::error::ErrorStack;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509Name, X509};
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::path::{Path, PathBuf};

    /// A new P-256 key.
    fn key() -> Result<PKey<Private>, ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        PKey::from_ec_key(EcKey::generate(&group)?)
    }

    /// A certificate for `subject`'s key, valid for a day, signed by
    /// `issuer` (itself when `None`).
    fn certificate(
        common_name: &str,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
    ) -> Result<X509, ErrorStack> {
        let mut name = X509Name::builder()?;
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_pubkey(key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(1)?)?;
        match issuer {
            None => {
                b.set_issuer_name(&name)?;
                b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
                b.append_extension(KeyUsage::new().key_cert_sign().crl_sign().build()?)?;
                b.sign(key, MessageDigest::sha256())?;
            }
            Some((ca, ca_key)) => {
                b.set_issuer_name(ca.subject_name())?;
                let san = SubjectAlternativeName::new()
                    .dns(common_name)
                    .build(&b.x509v3_context(Some(ca), None))?;
                b.append_extension(san)?;
                b.append_extension(BasicConstraints::new().build()?)?;
                b.sign(ca_key, MessageDigest::sha256())?;
            }
        }
        Ok(b.build())
    }

    /// A new authority, with its key: for tests that need one the server
    /// does not trust.
    pub(super) fn authority(name: &str) -> Result<(X509, PKey<Private>), ErrorStack> {
        let key = key()?;
        Ok((certificate(name, &key, None)?, key))
    }

    /// Writes a new authority's certificate to `root/ca.crt`, and a server
    /// certificate for `localhost` it signed, with its key, into the data
    /// directory (owned by the server's user, the key readable by it
    /// alone, as PostgreSQL demands); turns `ssl` on. Returns the
    /// authority's file.
    pub(super) fn write(
        root: &Path,
        data: &Path,
        user: Option<(u32, u32)>,
    ) -> Result<PathBuf, StartError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            StartError::Failed(format!("cannot make the test server's {what}: {e}"))
        };
        let (ca, ca_key) =
            authority("rederive test authority").map_err(|e| failed("authority", &e))?;
        let key = key().map_err(|e| failed("key", &e))?;
        let cert = certificate("localhost", &key, Some((&ca, &ca_key)))
            .map_err(|e| failed("certificate", &e))?;
        let pem = |r: Result<Vec<u8>, ErrorStack>| r.map_err(|e| failed("certificate", &e));
        let files = [
            (root.join("ca.crt"), pem(ca.to_pem())?, 0o644, false),
            (data.join("server.crt"), pem(cert.to_pem())?, 0o644, true),
            (
                data.join("server.key"),
                pem(key.private_key_to_pem_pkcs8())?,
                0o600,
                true,
            ),
        ];
        for (path, bytes, mode, server_owns) in &files {
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(*mode)
                .open(path)
                .and_then(|mut f| f.write_all(bytes))
                .map_err(|e| failed(&path.display().to_string(), &e))?;
            if let (true, Some((uid, gid))) = (server_owns, user) {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| failed(&path.display().to_string(), &e))?;
            }
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(b"ssl = on\n"))
            .map_err(|e| failed("settings", &e))?;
        Ok(files[0].0.clone())
    }
}

/// Writes the certificate (PEM) of a new authority, one that signed no
/// server's certificate, to `path`: for tests of a certificate that must
/// not be accepted.
///
/// # Errors
///
/// When the certificate cannot be made or written.
#[cfg(feature = "tls")]
pub fn write_unrelated_authority(path: &Path) -> std::io::Result<()> {
    let (cert, _) = certificates::authority("an unrelated authority")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(
        path,
        cert.to_pem()
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    )
}
