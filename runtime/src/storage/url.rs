//! Backends reached by URL: a crate that provides a server backend (such as
//! `rederive-postgres` for `postgres://` URLs) registers its schemes here,
//! and [`Db::open`](crate::Db::open) and the CLI's `--db` accept its URLs
//! when that crate is linked in (the `rederive` facade's cargo features do
//! this).

use super::Backend;
use crate::error::{Error, Result};

/// One URL scheme a linked backend opens, registered with
/// [`inventory::submit!`] by the crate that provides the backend.
pub struct UrlBackend {
    /// The schemes, without `://` (for example `["postgres", "postgresql"]`).
    pub schemes: &'static [&'static str],
    /// The cargo feature of the `rederive` crate that links this backend in,
    /// named in the error for a URL no linked backend opens.
    pub feature: &'static str,
    /// Opens (connecting, and creating rederive's own tables if needed) the
    /// database at this URL.
    pub open: fn(url: &str) -> Result<Box<dyn Backend>>,
}

inventory::collect!(UrlBackend);

/// The backends known to this build, linked in or not: a URL of one of
/// these schemes without its crate gets an error naming the feature.
const KNOWN: &[(&str, &str)] = &[("postgres", "postgres"), ("postgresql", "postgres")];

/// The scheme of a database location, when it is a URL (`scheme://...`)
/// rather than a file path.
pub fn url_scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Opens the backend for a database URL; `Ok(None)` when `location` is not
/// a URL (a file path).
pub fn open_url(location: &str) -> Result<Option<Box<dyn Backend>>> {
    let Some(scheme) = url_scheme(location) else {
        return Ok(None);
    };
    let lower = scheme.to_ascii_lowercase();
    if let Some(b) = inventory::iter::<UrlBackend>().find(|b| b.schemes.contains(&lower.as_str())) {
        return (b.open)(location).map(Some);
    }
    let reason = match KNOWN.iter().find(|(s, _)| *s == lower) {
        Some((_, feature)) => format!(
            "this program was built without rederive's `{feature}` feature: \
             enable it in Cargo.toml (`rederive = {{ version = \"..\", features = [\"{feature}\"] }}`)"
        ),
        None => format!(
            "no backend opens `{scheme}://` URLs (a file path opens SQLite{})",
            known_list()
        ),
    };
    Err(Error::NotADatabase {
        path: redact(location).into(),
        reason,
    })
}

fn known_list() -> String {
    let linked: Vec<String> = inventory::iter::<UrlBackend>()
        .flat_map(|b| b.schemes.iter().map(|s| format!("`{s}://`")))
        .collect();
    if linked.is_empty() {
        String::new()
    } else {
        format!("; this build also opens {}", linked.join(", "))
    }
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => location.to_owned(),
        },
        None => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_told_from_paths() {
        assert_eq!(url_scheme("postgres://u@h/db"), Some("postgres"));
        assert_eq!(url_scheme("postgresql://h/db"), Some("postgresql"));
        assert_eq!(url_scheme("data/files.db"), None);
        assert_eq!(url_scheme("./odd://name.db"), None);
        assert_eq!(url_scheme("://x"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://me:secret@host:5432/db"),
            "postgres://me:***@host:5432/db"
        );
        assert_eq!(redact("postgres://me@host/db"), "postgres://me@host/db");
        assert_eq!(redact("files.db"), "files.db");
    }

    #[test]
    fn an_unlinked_backend_names_its_feature() {
        let Err(e) = open_url("postgres://me:pw@127.0.0.1/x") else {
            panic!("no postgres backend is linked into the runtime's unit tests");
        };
        let m = e.to_string();
        assert!(m.contains("`postgres` feature"), "{m}");
        assert!(!m.contains("pw"), "{m}");
        let Err(e) = open_url("mysql://h/x") else {
            panic!("mysql is not a backend");
        };
        assert!(e.to_string().contains("no backend opens `mysql://`"), "{e}");
        assert!(open_url("plain.db").unwrap().is_none());
    }
}
