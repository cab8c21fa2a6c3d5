//! Replicas over the network: [`serve`] answers the [`Peer`] requests of
//! a database over HTTP/1.1, and [`HttpPeer`] asks them, so that
//! [`crate::replica::sync`] and [`crate::replica::retire`] work with a
//! replica on another machine as with a file here.
//!
//! ```no_run
//! # fn main() -> rederive_runtime::Result<()> {
//! // (through the facade: `rederive::replica::net::HttpPeer`)
//! use rederive_runtime::replica::net::HttpPeer;
//! let laptop = rederive_runtime::Db::open("laptop.db")?;
//! // On the desk: `my-program serve --listen 0.0.0.0:4300`.
//! let desk = HttpPeer::new("http://desk.local:4300")?;
//! println!("{}", rederive_runtime::replica::sync(&laptop, &desk)?);
//! # Ok(()) }
//! ```
//!
//! # The protocol
//!
//! One HTTP request per [`Peer`] method:
//!
//! | method | route | request body | response body |
//! | --- | --- | --- | --- |
//! | [`Peer::describe`] | `GET /replica/describe` | none | [`PeerInfo`] |
//! | [`Peer::checkpoint`] | `GET /replica/checkpoint?of=NAME` | none | [`SyncCursor`] |
//! | [`Peer::changes_after`] | `POST /replica/changes` | to, cursor, limit | [`Changes`] |
//! | [`Peer::apply`] | `POST /replica/apply` | from, versions, upto | [`Applied`] |
//! | [`Peer::absorb`] | `POST /replica/absorb` | from, clock id | an acknowledgement |
//! | [`Peer::shared_checkpoint`] | `GET /replica/shared-checkpoint?of=NAME` | none | a position |
//! | [`Peer::shared_after`] | `POST /replica/shared` | to, position, limit | [`SharedPage`] |
//! | [`Peer::adopt`] | `POST /replica/adopt` | from, [`SharedRow`]s, upto | how many were stored |
//!
//! Bodies are `application/octet-stream` in the encoding of
//! [`crate::replica::codec`]: every message starts with the wire format
//! version ([`FORMAT`]) and its kind, and a peer refuses a format it does
//! not speak. A request that fails gets a non-2xx status whose body is the
//! error's text, which the client reports as [`Error::Replica`].
//!
//! The server is plain HTTP: serve on loopback or a private network (or
//! behind a proxy that adds TLS and authentication), since anyone who
//! reaches it can write into the database.

use super::codec::{Reader, Writer};
use super::shared::{SharedPage, SharedRow};
use super::version::{event_bytes, event_from_bytes, id_bytes, id_from_bytes, Version};
use super::{Peer, PeerInfo};
use crate::engine::Db;
use crate::error::{Error, Result};
use crate::storage::{Applied, Changes, ReplicaMeta, SyncCursor};
use rederive_itc::Id;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The wire format version, the first byte of every message. A peer that
/// receives another one refuses the message.
pub const FORMAT: u8 = 2;

/// The largest body either side reads (a page of versions is far smaller
/// unless its rows are huge).
const MAX_BODY: u64 = 1 << 30;

/// The most versions the server puts in one page, whatever the client asks.
const MAX_PAGE: usize = 10 * super::SYNC_BATCH;

/// How often the server looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------
// The wire encoding
// ---------------------------------------------------------------------

/// What a message is, written after the format version so that a body
/// sent to the wrong route is refused by name rather than misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Info = 1,
    Cursor = 2,
    Changes = 3,
    Applied = 4,
    ChangesRequest = 5,
    ApplyRequest = 6,
    AbsorbRequest = 7,
    Ack = 8,
    SharedRequest = 9,
    Shared = 10,
    AdoptRequest = 11,
    Adopted = 12,
    SharedCursor = 13,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Info => "replica description",
            Kind::Cursor => "checkpoint",
            Kind::Changes => "page of changes",
            Kind::Applied => "apply result",
            Kind::ChangesRequest => "changes request",
            Kind::ApplyRequest => "apply request",
            Kind::AbsorbRequest => "absorb request",
            Kind::Ack => "acknowledgement",
            Kind::SharedRequest => "request for derived rows",
            Kind::Shared => "page of derived rows",
            Kind::AdoptRequest => "offer of derived rows",
            Kind::Adopted => "adopt result",
            Kind::SharedCursor => "checkpoint of derived rows",
        }
    }
}

/// A new message of `kind`: the format version, then the kind.
fn message(kind: Kind) -> Writer {
    let mut w = Writer::default();
    w.bytes.push(FORMAT);
    w.uint(kind as u64);
    w
}

/// A reader past the header of a message that must be of `kind`.
fn open(bytes: &[u8], kind: Kind) -> Result<Reader<'_>, String> {
    let mut r = Reader::new(bytes);
    match bytes.first() {
        None => return Err(format!("expected a {}, got an empty message", kind.name())),
        Some(&FORMAT) => {
            r.uint()?;
        }
        Some(&other) => {
            return Err(format!(
                "the message is in replica wire format {other}, and this program speaks format \
                 {FORMAT} only: run the same version of rederive on both sides"
            ))
        }
    }
    let got = r.uint()?;
    if got != kind as u64 {
        return Err(format!(
            "expected a {} (message kind {}), got message kind {got}",
            kind.name(),
            kind as u64
        ));
    }
    Ok(r)
}

/// Reads the rest of a message with `read`, then checks that nothing is
/// left.
fn decode<T>(
    bytes: &[u8],
    kind: Kind,
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let mut r = open(bytes, kind)?;
    let out = read(&mut r)?;
    r.finish()?;
    Ok(out)
}

fn write_flag(w: &mut Writer, flag: bool) {
    w.uint(u64::from(flag));
}

fn read_flag(r: &mut Reader<'_>) -> Result<bool, String> {
    match r.uint()? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(format!("expected a flag (0 or 1), got {n}")),
    }
}

fn write_id(w: &mut Writer, id: &Id) {
    w.bytes(&id_bytes(id));
}

fn read_id(r: &mut Reader<'_>) -> Result<Id, String> {
    id_from_bytes(r.bytes()?)
}

fn write_cursor(w: &mut Writer, c: &SyncCursor) {
    w.int(c.seq);
    w.text(&c.table);
    w.key(&c.key);
    w.bytes(&c.event);
}

fn read_cursor(r: &mut Reader<'_>) -> Result<SyncCursor, String> {
    Ok(SyncCursor {
        seq: r.int()?,
        table: r.text()?,
        key: r.key()?,
        event: r.bytes()?.to_vec(),
    })
}

fn write_versions(w: &mut Writer, versions: &[Version]) {
    w.uint(versions.len() as u64);
    for v in versions {
        w.text(&v.table);
        w.key(&v.key);
        w.bytes(&event_bytes(&v.event));
        match &v.values {
            None => write_flag(w, false),
            Some(values) => {
                write_flag(w, true);
                w.values(values);
            }
        }
    }
}

fn read_versions(r: &mut Reader<'_>) -> Result<Vec<Version>, String> {
    // The count is at most the bytes left; no more is reserved up front.
    let n = r.len()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let table = r.text()?;
        let key = r.key()?;
        let event = event_from_bytes(r.bytes()?)?;
        let values = if read_flag(r)? {
            Some(r.values()?)
        } else {
            None
        };
        out.push(Version {
            table,
            key,
            event,
            values,
        });
    }
    Ok(out)
}

/// A [`PeerInfo`], encoded.
fn encode_info(info: &PeerInfo) -> Vec<u8> {
    let mut w = message(Kind::Info);
    w.text(&info.location);
    match &info.meta {
        None => write_flag(&mut w, false),
        Some(m) => {
            write_flag(&mut w, true);
            w.text(&m.family);
            w.text(&m.name);
            write_id(&mut w, &m.id);
            write_flag(&mut w, m.retired);
        }
    }
    w.bytes
}

fn decode_info(bytes: &[u8]) -> Result<PeerInfo, String> {
    decode(bytes, Kind::Info, |r| {
        let location = r.text()?;
        let meta = if read_flag(r)? {
            Some(ReplicaMeta {
                family: r.text()?,
                name: r.text()?,
                id: read_id(r)?,
                retired: read_flag(r)?,
            })
        } else {
            None
        };
        Ok(PeerInfo { location, meta })
    })
}

fn encode_cursor(c: &SyncCursor) -> Vec<u8> {
    let mut w = message(Kind::Cursor);
    write_cursor(&mut w, c);
    w.bytes
}

fn decode_cursor(bytes: &[u8]) -> Result<SyncCursor, String> {
    decode(bytes, Kind::Cursor, read_cursor)
}

fn encode_changes(c: &Changes) -> Vec<u8> {
    let mut w = message(Kind::Changes);
    write_versions(&mut w, &c.versions);
    write_cursor(&mut w, &c.next);
    write_flag(&mut w, c.more);
    w.bytes
}

fn decode_changes(bytes: &[u8]) -> Result<Changes, String> {
    decode(bytes, Kind::Changes, |r| {
        Ok(Changes {
            versions: read_versions(r)?,
            next: read_cursor(r)?,
            more: read_flag(r)?,
        })
    })
}

fn encode_applied(a: &Applied) -> Vec<u8> {
    let mut w = message(Kind::Applied);
    w.uint(a.changed);
    w.uint(a.ignored);
    w.uint(a.conflicts);
    w.bytes
}

fn decode_applied(bytes: &[u8]) -> Result<Applied, String> {
    decode(bytes, Kind::Applied, |r| {
        Ok(Applied {
            changed: r.uint()?,
            ignored: r.uint()?,
            conflicts: r.uint()?,
        })
    })
}

/// The arguments of [`Peer::changes_after`].
#[derive(Debug, Clone, PartialEq)]
struct ChangesRequest {
    to: String,
    after: SyncCursor,
    limit: usize,
}

fn encode_changes_request(to: &str, after: &SyncCursor, limit: usize) -> Vec<u8> {
    let mut w = message(Kind::ChangesRequest);
    w.text(to);
    write_cursor(&mut w, after);
    w.uint(limit as u64);
    w.bytes
}

fn decode_changes_request(bytes: &[u8]) -> Result<ChangesRequest, String> {
    decode(bytes, Kind::ChangesRequest, |r| {
        Ok(ChangesRequest {
            to: r.text()?,
            after: read_cursor(r)?,
            // A limit beyond the address space asks for everything.
            limit: usize::try_from(r.uint()?).unwrap_or(usize::MAX),
        })
    })
}

/// The arguments of [`Peer::apply`].
#[derive(Debug, Clone, PartialEq)]
struct ApplyRequest {
    from: String,
    versions: Vec<Version>,
    upto: SyncCursor,
}

/// The body of a request that pushes `versions` from the replica `from`
/// to a served one, as [`HttpPeer`] sends it (what a sync puts on the wire
/// for them, HTTP's own headers aside).
pub fn encode_apply_request(from: &str, versions: &[Version], upto: &SyncCursor) -> Vec<u8> {
    let mut w = message(Kind::ApplyRequest);
    w.text(from);
    write_versions(&mut w, versions);
    write_cursor(&mut w, upto);
    w.bytes
}

fn decode_apply_request(bytes: &[u8]) -> Result<ApplyRequest, String> {
    decode(bytes, Kind::ApplyRequest, |r| {
        Ok(ApplyRequest {
            from: r.text()?,
            versions: read_versions(r)?,
            upto: read_cursor(r)?,
        })
    })
}

fn encode_absorb_request(from: &str, id: &Id) -> Vec<u8> {
    let mut w = message(Kind::AbsorbRequest);
    w.text(from);
    write_id(&mut w, id);
    w.bytes
}

fn decode_absorb_request(bytes: &[u8]) -> Result<(String, Id), String> {
    decode(bytes, Kind::AbsorbRequest, |r| Ok((r.text()?, read_id(r)?)))
}

/// The arguments of [`Peer::shared_after`].
#[derive(Debug, Clone, PartialEq)]
struct SharedRequest {
    to: String,
    after: i64,
    limit: usize,
}

fn encode_shared_request(to: &str, after: i64, limit: usize) -> Vec<u8> {
    let mut w = message(Kind::SharedRequest);
    w.text(to);
    w.int(after);
    w.uint(limit as u64);
    w.bytes
}

fn decode_shared_request(bytes: &[u8]) -> Result<SharedRequest, String> {
    decode(bytes, Kind::SharedRequest, |r| {
        Ok(SharedRequest {
            to: r.text()?,
            after: r.int()?,
            // A limit beyond the address space asks for everything.
            limit: usize::try_from(r.uint()?).unwrap_or(usize::MAX),
        })
    })
}

fn encode_shared_cursor(seq: i64) -> Vec<u8> {
    let mut w = message(Kind::SharedCursor);
    w.int(seq);
    w.bytes
}

fn decode_shared_cursor(bytes: &[u8]) -> Result<i64, String> {
    decode(bytes, Kind::SharedCursor, |r| r.int())
}

fn write_shared(w: &mut Writer, rows: &[SharedRow]) {
    w.uint(rows.len() as u64);
    for row in rows {
        w.text(&row.table);
        w.key(&row.key);
        w.bytes(&row.digest);
        w.values(&row.values);
    }
}

fn read_shared(r: &mut Reader<'_>) -> Result<Vec<SharedRow>, String> {
    let n = r.len()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let table = r.text()?;
        let key = r.key()?;
        let digest = r.bytes()?.try_into().map_err(|_| {
            format!("the digest of derived row {key} of `{table}` is not 32 bytes long")
        })?;
        out.push(SharedRow {
            table,
            key,
            digest,
            values: r.values()?,
        });
    }
    Ok(out)
}

fn encode_shared(page: &SharedPage) -> Vec<u8> {
    let mut w = message(Kind::Shared);
    write_shared(&mut w, &page.rows);
    w.int(page.next);
    write_flag(&mut w, page.more);
    w.bytes
}

fn decode_shared(bytes: &[u8]) -> Result<SharedPage, String> {
    decode(bytes, Kind::Shared, |r| {
        Ok(SharedPage {
            rows: read_shared(r)?,
            next: r.int()?,
            more: read_flag(r)?,
        })
    })
}

/// The arguments of [`Peer::adopt`].
#[derive(Debug, Clone, PartialEq)]
struct AdoptRequest {
    from: String,
    rows: Vec<SharedRow>,
    upto: i64,
}

fn encode_adopt_request(from: &str, rows: &[SharedRow], upto: i64) -> Vec<u8> {
    let mut w = message(Kind::AdoptRequest);
    w.text(from);
    write_shared(&mut w, rows);
    w.int(upto);
    w.bytes
}

fn decode_adopt_request(bytes: &[u8]) -> Result<AdoptRequest, String> {
    decode(bytes, Kind::AdoptRequest, |r| {
        Ok(AdoptRequest {
            from: r.text()?,
            rows: read_shared(r)?,
            upto: r.int()?,
        })
    })
}

fn encode_adopted(n: u64) -> Vec<u8> {
    let mut w = message(Kind::Adopted);
    w.uint(n);
    w.bytes
}

fn decode_adopted(bytes: &[u8]) -> Result<u64, String> {
    decode(bytes, Kind::Adopted, |r| r.uint())
}

fn encode_ack() -> Vec<u8> {
    message(Kind::Ack).bytes
}

fn decode_ack(bytes: &[u8]) -> Result<(), String> {
    decode(bytes, Kind::Ack, |_| Ok(()))
}

/// `s` with every byte but unreserved ones percent-encoded (for a query
/// parameter).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`percent_encode`] (`+` is a space, as forms write it).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("a bad percent escape in `{s}`"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

// ---------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------

/// Why a request was not answered with a 200.
struct Refusal {
    status: u16,
    text: String,
}

impl Refusal {
    fn bad_request(text: String) -> Refusal {
        Refusal { status: 400, text }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal {
            status: 500,
            text: e.to_string(),
        }
    }
}

/// Serves the [`Peer`] methods of `db` over HTTP/1.1 on `listen` (an
/// address such as `127.0.0.1:4300`, bound exactly as given; port 0 takes
/// a free one), one request at a time, until `stop` is set (it is looked
/// at every 100 ms). `on_ready` is called once with the address bound,
/// before the first request is taken.
///
/// The server speaks plain HTTP and checks no credentials: whoever reaches
/// it can sync with, and so write into, `db`.
pub fn serve(
    db: &Db,
    listen: &str,
    stop: &AtomicBool,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let failed = |reason: String| Error::Replica {
        replica: db.location(),
        reason,
    };
    let server = tiny_http::Server::http(listen)
        .map_err(|e| failed(format!("cannot listen on {listen}: {e}")))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| failed(format!("{listen} is not an IP address")))?;
    on_ready(addr);
    while !stop.load(Ordering::SeqCst) {
        let request = server
            .recv_timeout(POLL)
            .map_err(|e| failed(format!("cannot take a request on {addr}: {e}")))?;
        if let Some(request) = request {
            answer(db, request);
        }
    }
    Ok(())
}

/// Answers one request. A client that went away is no concern of the
/// server's: failures to respond are ignored.
fn answer(db: &Db, mut request: tiny_http::Request) {
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    let outcome = match read {
        Err(e) => Err(Refusal::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(_) if body.len() as u64 > MAX_BODY => Err(Refusal {
            status: 413,
            text: format!("the request body is over {MAX_BODY} bytes"),
        }),
        Ok(_) => route(db, request.method(), request.url(), &body),
    };
    let response = match outcome {
        Ok(bytes) => tiny_http::Response::from_data(bytes)
            .with_header(content_type("application/octet-stream")),
        Err(refusal) => tiny_http::Response::from_data(refusal.text.into_bytes())
            .with_status_code(refusal.status)
            .with_header(content_type("text/plain; charset=utf-8")),
    };
    let _ = request.respond(response);
}

fn content_type(value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes("Content-Type", value).expect("a valid header")
}

/// The response body for a request, or why there is none.
fn route(db: &Db, method: &tiny_http::Method, url: &str, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    use tiny_http::Method::{Get, Post};
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let expect = |wanted: &tiny_http::Method| {
        if method == wanted {
            Ok(())
        } else {
            Err(Refusal {
                status: 405,
                text: format!("{path} takes {wanted}, not {method}"),
            })
        }
    };
    match path {
        "/replica/describe" => {
            expect(&Get)?;
            Ok(encode_info(&db.describe()?))
        }
        "/replica/checkpoint" | "/replica/shared-checkpoint" => {
            expect(&Get)?;
            let of = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("of="))
                .ok_or_else(|| Refusal::bad_request("the query lacks `of=NAME`".into()))?;
            let of = percent_decode(of).map_err(Refusal::bad_request)?;
            if path == "/replica/checkpoint" {
                Ok(encode_cursor(&db.checkpoint(&of)?))
            } else {
                Ok(encode_shared_cursor(db.shared_checkpoint(&of)?))
            }
        }
        "/replica/changes" => {
            expect(&Post)?;
            let req = decode_changes_request(body).map_err(Refusal::bad_request)?;
            let page = db.changes_after(&req.to, &req.after, req.limit.min(MAX_PAGE))?;
            Ok(encode_changes(&page))
        }
        "/replica/apply" => {
            expect(&Post)?;
            let req = decode_apply_request(body).map_err(Refusal::bad_request)?;
            Ok(encode_applied(&db.apply(
                &req.from,
                &req.versions,
                &req.upto,
            )?))
        }
        "/replica/absorb" => {
            expect(&Post)?;
            let (from, id) = decode_absorb_request(body).map_err(Refusal::bad_request)?;
            db.absorb(&from, &id)?;
            Ok(encode_ack())
        }
        "/replica/shared" => {
            expect(&Post)?;
            let req = decode_shared_request(body).map_err(Refusal::bad_request)?;
            let page = db.shared_after(&req.to, req.after, req.limit.min(MAX_PAGE))?;
            Ok(encode_shared(&page))
        }
        "/replica/adopt" => {
            expect(&Post)?;
            let req = decode_adopt_request(body).map_err(Refusal::bad_request)?;
            Ok(encode_adopted(
                db.adopt_from(&req.from, &req.rows, req.upto)?,
            ))
        }
        _ => Err(Refusal {
            status: 404,
            text: format!(
                "no such route: {path} (this is a rederive replica server; its routes are under \
                 /replica/)"
            ),
        }),
    }
}

// ---------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------

/// A replica served over the network by [`serve`] (the CLI's `serve`), as
/// a sync [`Peer`].
#[derive(Debug)]
pub struct HttpPeer {
    /// The base URL, without a trailing `/`.
    url: String,
    agent: ureq::Agent,
}

impl HttpPeer {
    /// A peer at `url`, such as `http://127.0.0.1:4300` (plain HTTP; a path
    /// after the address is kept as a prefix of the routes). Nothing is
    /// sent until the first request.
    pub fn new(url: &str) -> Result<HttpPeer> {
        let refuse = |reason: String| Error::Replica {
            replica: url.to_owned(),
            reason,
        };
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(refuse(if url.starts_with("https://") {
                "replica servers speak plain HTTP (`http://HOST:PORT`); put a proxy that adds \
                 TLS in front of `serve` and reach it through a tunnel"
                    .into()
            } else {
                "a replica server's URL is `http://HOST:PORT`".into()
            }));
        };
        if rest.split('/').next().is_none_or(str::is_empty) {
            return Err(refuse(
                "the URL names no host: write `http://HOST:PORT`".into(),
            ));
        }
        let agent = ureq::Agent::config_builder()
            // Error statuses carry the server's message: read it.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A request is one page of changes: a server silent for this
            // long is gone.
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .new_agent();
        Ok(HttpPeer {
            url: url.trim_end_matches('/').to_owned(),
            agent,
        })
    }

    /// The URL the peer was made with (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(&self, reason: String) -> Error {
        Error::Replica {
            replica: self.url.clone(),
            reason,
        }
    }

    /// Sends a request to `route` (a `POST` with `body`, else a `GET`) and
    /// returns the response body, or the server's error.
    fn request(&self, route: &str, body: Option<&[u8]>) -> Result<Vec<u8>> {
        let target = format!("{}{route}", self.url);
        let sent = match body {
            Some(body) => self
                .agent
                .post(&target)
                .header("Content-Type", "application/octet-stream")
                .send(body),
            None => self.agent.get(&target).call(),
        };
        let mut response = sent.map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_) => self.error(format!(
                "cannot reach the replica server ({e}); is `serve` running there?"
            )),
            e => self.error(format!("the request to {target} failed: {e}")),
        })?;
        let status = response.status();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.error(format!("cannot read the answer from {target}: {e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            return Err(self.error(if text.is_empty() {
                format!("the server answered {status}")
            } else {
                text
            }));
        }
        Ok(bytes)
    }

    /// Decodes an answer, naming this peer when it does not decode.
    fn decoded<T>(&self, bytes: &[u8], decode: fn(&[u8]) -> Result<T, String>) -> Result<T> {
        decode(bytes).map_err(|e| self.error(format!("its answer does not decode: {e}")))
    }
}

impl Peer for HttpPeer {
    fn describe(&self) -> Result<PeerInfo> {
        let bytes = self.request("/replica/describe", None)?;
        let info = self.decoded(&bytes, decode_info)?;
        Ok(PeerInfo {
            // Messages name the URL the user gave, and the server's file.
            location: format!("{} ({})", self.url, info.location),
            meta: info.meta,
        })
    }

    fn checkpoint(&self, of: &str) -> Result<SyncCursor> {
        let route = format!("/replica/checkpoint?of={}", percent_encode(of));
        let bytes = self.request(&route, None)?;
        self.decoded(&bytes, decode_cursor)
    }

    fn changes_after(&self, to: &str, after: &SyncCursor, limit: usize) -> Result<Changes> {
        let body = encode_changes_request(to, after, limit);
        let bytes = self.request("/replica/changes", Some(&body))?;
        self.decoded(&bytes, decode_changes)
    }

    fn apply(&self, from: &str, versions: &[Version], upto: &SyncCursor) -> Result<Applied> {
        let body = encode_apply_request(from, versions, upto);
        let bytes = self.request("/replica/apply", Some(&body))?;
        self.decoded(&bytes, decode_applied)
    }

    fn absorb(&self, from: &str, id: &Id) -> Result<()> {
        let body = encode_absorb_request(from, id);
        let bytes = self.request("/replica/absorb", Some(&body))?;
        self.decoded(&bytes, decode_ack)
    }

    fn shared_checkpoint(&self, of: &str) -> Result<i64> {
        let route = format!("/replica/shared-checkpoint?of={}", percent_encode(of));
        let bytes = self.request(&route, None)?;
        self.decoded(&bytes, decode_shared_cursor)
    }

    fn shared_after(&self, to: &str, after: i64, limit: usize) -> Result<SharedPage> {
        let body = encode_shared_request(to, after, limit);
        let bytes = self.request("/replica/shared", Some(&body))?;
        self.decoded(&bytes, decode_shared)
    }

    fn adopt(&self, from: &str, rows: &[SharedRow], upto: i64) -> Result<u64> {
        let body = encode_adopt_request(from, rows, upto);
        let bytes = self.request("/replica/adopt", Some(&body))?;
        self.decoded(&bytes, decode_adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::version::next_event;
    use crate::value::{Key, Value};
    use rederive_itc::Stamp;

    fn cursor() -> SyncCursor {
        SyncCursor {
            seq: 42,
            table: "Note".into(),
            key: Key::Text("a b/ç".into()),
            event: vec![1, 2, 3],
        }
    }

    fn versions() -> Vec<Version> {
        let (a, b) = Stamp::seed().fork();
        let first = Version {
            table: "Note".into(),
            key: Key::Int(-7),
            event: next_event(a.id(), &[]).unwrap(),
            values: Some(vec![
                Value::Integer(-7),
                Value::Text("hello".into()),
                Value::Real(1.5),
                Value::Blob(vec![0, 255]),
                Value::Null,
            ]),
        };
        let deleted = Version {
            table: "Other".into(),
            key: Key::Text("k".into()),
            event: next_event(b.id(), std::slice::from_ref(&first)).unwrap(),
            values: None,
        };
        vec![first, deleted]
    }

    fn info(meta: bool) -> PeerInfo {
        let (a, _) = Stamp::seed().fork();
        PeerInfo {
            location: "/tmp/desk.db".into(),
            meta: meta.then(|| ReplicaMeta {
                family: "fam".into(),
                name: "desk".into(),
                id: a.id().clone(),
                retired: true,
            }),
        }
    }

    fn shared() -> Vec<SharedRow> {
        vec![SharedRow {
            table: "Words".into(),
            key: Key::from("a/b.txt"),
            digest: [7; 32],
            values: vec![Value::Integer(12), Value::Null, Value::Text("x".into())],
        }]
    }

    fn shared_page() -> SharedPage {
        SharedPage {
            rows: shared(),
            next: 12,
            more: true,
        }
    }

    /// Every message of the protocol, encoded, with a check that it
    /// decodes to what was encoded.
    #[allow(clippy::type_complexity)]
    fn messages() -> Vec<(Vec<u8>, Box<dyn Fn(&[u8]) -> Result<(), String>>)> {
        let (a, _) = Stamp::seed().fork();
        let id = a.id().clone();
        let changes = Changes {
            versions: versions(),
            next: cursor(),
            more: true,
        };
        let applied = Applied {
            changed: 3,
            ignored: 1,
            conflicts: 300,
        };
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{what} did not round-trip"))
            }
        };
        let id2 = id.clone();
        let (c1, c2, c3, a1) = (changes.clone(), cursor(), cursor(), applied.clone());
        vec![
            (
                encode_info(&info(true)),
                Box::new(move |b| check(decode_info(b)? == info(true), "info")),
            ),
            (
                encode_info(&info(false)),
                Box::new(move |b| check(decode_info(b)? == info(false), "info without meta")),
            ),
            (
                encode_cursor(&cursor()),
                Box::new(move |b| check(decode_cursor(b)? == c2, "cursor")),
            ),
            (
                encode_cursor(&SyncCursor::start()),
                Box::new(move |b| check(decode_cursor(b)? == SyncCursor::start(), "start")),
            ),
            (
                encode_changes(&changes),
                Box::new(move |b| check(decode_changes(b)? == c1, "changes")),
            ),
            (
                encode_applied(&applied),
                Box::new(move |b| check(decode_applied(b)? == a1, "applied")),
            ),
            (
                encode_changes_request("laptop", &cursor(), 2000),
                Box::new(move |b| {
                    let want = ChangesRequest {
                        to: "laptop".into(),
                        after: c3.clone(),
                        limit: 2000,
                    };
                    check(decode_changes_request(b)? == want, "changes request")
                }),
            ),
            (
                encode_apply_request("laptop", &versions(), &cursor()),
                Box::new(move |b| {
                    let want = ApplyRequest {
                        from: "laptop".into(),
                        versions: versions(),
                        upto: cursor(),
                    };
                    check(decode_apply_request(b)? == want, "apply request")
                }),
            ),
            (
                encode_apply_request("laptop", &[], &SyncCursor::start()),
                Box::new(move |b| {
                    let req = decode_apply_request(b)?;
                    check(req.versions.is_empty(), "empty apply request")
                }),
            ),
            (
                encode_absorb_request("laptop", &id),
                Box::new(move |b| {
                    check(
                        decode_absorb_request(b)? == ("laptop".into(), id2.clone()),
                        "absorb request",
                    )
                }),
            ),
            (encode_ack(), Box::new(decode_ack)),
            (
                encode_shared_request("laptop", -5, 500),
                Box::new(move |b| {
                    let want = SharedRequest {
                        to: "laptop".into(),
                        after: -5,
                        limit: 500,
                    };
                    check(decode_shared_request(b)? == want, "shared request")
                }),
            ),
            (
                encode_shared_cursor(77),
                Box::new(move |b| check(decode_shared_cursor(b)? == 77, "shared checkpoint")),
            ),
            (
                encode_shared(&shared_page()),
                Box::new(move |b| check(decode_shared(b)? == shared_page(), "derived rows")),
            ),
            (
                encode_adopt_request("desk", &shared(), 9),
                Box::new(move |b| {
                    let want = AdoptRequest {
                        from: "desk".into(),
                        rows: shared(),
                        upto: 9,
                    };
                    check(decode_adopt_request(b)? == want, "adopt request")
                }),
            ),
            (
                encode_adopted(42),
                Box::new(move |b| check(decode_adopted(b)? == 42, "adopted")),
            ),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for (bytes, check) in messages() {
            check(&bytes).unwrap();
        }
    }

    #[test]
    fn truncated_or_extended_messages_are_errors() {
        for (i, (bytes, check)) in messages().into_iter().enumerate() {
            for end in 0..bytes.len() {
                assert!(
                    check(&bytes[..end]).is_err(),
                    "message {i} cut to {end} bytes decoded"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            let err = check(&long).unwrap_err();
            assert!(err.contains("expected the end"), "message {i}: {err}");
        }
    }

    #[test]
    fn other_formats_and_kinds_are_refused_by_name() {
        let mut bytes = encode_cursor(&cursor());
        bytes[0] = 1;
        let err = decode_cursor(&bytes).unwrap_err();
        assert!(err.contains("wire format 1"), "{err}");
        assert!(err.contains("format 2 only"), "{err}");
        let err = decode_cursor(&encode_ack()).unwrap_err();
        assert!(err.contains("expected a checkpoint"), "{err}");
        let err = decode_info(&[]).unwrap_err();
        assert!(err.contains("empty message"), "{err}");
        // A flag that is neither 0 nor 1.
        let mut bytes = encode_info(&info(false));
        *bytes.last_mut().unwrap() = 7;
        let err = decode_info(&bytes).unwrap_err();
        assert!(err.contains("a flag"), "{err}");
    }

    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        type Decoder = fn(&[u8]) -> Result<(), String>;
        let decoders: [Decoder; 8] = [
            |b| decode_info(b).map(drop),
            |b| decode_cursor(b).map(drop),
            |b| decode_changes(b).map(drop),
            |b| decode_applied(b).map(drop),
            |b| decode_changes_request(b).map(drop),
            |b| decode_apply_request(b).map(drop),
            |b| decode_absorb_request(b).map(drop),
            decode_ack,
        ];
        proptest!(|(kind in 1u8..=8, tail in proptest::collection::vec(any::<u8>(), 0..64))| {
            // Past the header, so that the bodies are what is tried.
            let mut bytes = vec![FORMAT, kind];
            bytes.extend(tail);
            for decode in decoders {
                let _ = decode(&bytes);
            }
        });
        // Every prefix of real messages with bytes flipped.
        for (bytes, check) in messages() {
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0xff;
                let _ = check(&bad);
            }
        }
    }

    #[test]
    fn names_survive_the_query_string() {
        for name in ["desk", "a b&c=d%/ç+", ""] {
            assert_eq!(percent_decode(&percent_encode(name)).unwrap(), name);
        }
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
    }

    #[test]
    fn urls_other_than_plain_http_are_refused() {
        for (url, says) in [
            ("https://example.invalid", "plain HTTP"),
            ("ftp://x", "http://HOST:PORT"),
            ("desk.db", "http://HOST:PORT"),
            ("http://", "no host"),
            ("http:///x", "no host"),
        ] {
            match HttpPeer::new(url) {
                Err(Error::Replica { replica, reason }) => {
                    assert_eq!(replica, url);
                    assert!(reason.contains(says), "{url}: {reason}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        assert_eq!(
            HttpPeer::new("http://127.0.0.1:1/").unwrap().url(),
            "http://127.0.0.1:1"
        );
    }
}
