//! Encrypted connections: libpq's `sslmode` and certificate files, read
//! from the connection string.
//!
//! The `postgres` crate knows `sslmode=disable|prefer|require` only, and
//! refuses parameters it does not know; users copy connection strings
//! written for libpq (`psql`), with `verify-full` and `sslrootcert`. So
//! these parameters are taken out of the string here ([`split`]), and the
//! rest goes to the `postgres` crate. Their meaning is libpq's:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | when the server offers it | only when a root certificate is given or `~/.postgresql/root.crt` exists |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | signed by an authority of `sslrootcert` |
//! | `verify-full` | always | that, and it names the host connected to |
//!
//! `sslrootcert=FILE` names the authorities' certificates (PEM), and
//! `sslrootcert=system` the system's own; without it,
//! `~/.postgresql/root.crt` is used where it exists. `sslcert` and
//! `sslkey` give a client certificate and its key (PEM, unencrypted), by
//! default `~/.postgresql/postgresql.crt` and `.key` where they exist.
//! `allow` is taken as `prefer` (it asks for encryption first, where libpq
//! asks last). Unix sockets are never encrypted, whatever the mode, as
//! with libpq. Environment variables (`PGSSLMODE`, ...) are not read,
//! as the `postgres` crate reads none of libpq's.
//!
//! Without the `tls` feature, a mode or file that needs encryption is
//! refused with a message that names the feature; `prefer` connects
//! unencrypted.

use percent_encoding::percent_decode_str;
use postgres::config::{Host, SslMode};
use postgres::Config;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, String> {
        Ok(match value {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not a mode (disable, allow, prefer, require, verify-ca, verify-full)"
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Allow => "allow",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, Mode::VerifyCa | Mode::VerifyFull)
    }
}

/// What a connection string says of encryption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params {
    mode: Option<Mode>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl Params {
    /// Takes one parameter if it is ours: `Ok(false)` when it is not.
    fn take(&mut self, key: &str, value: String) -> Result<bool, String> {
        match key {
            "sslmode" => self.mode = Some(Mode::parse(&value)?),
            "sslrootcert" => self.root_cert = Some(value),
            "sslcert" => self.cert = Some(value),
            "sslkey" => self.key = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Splits the encryption parameters off a connection string (a URL, or
/// `key=value` words): the rest, for the `postgres` crate, and ours.
pub(crate) fn split(conn: &str) -> Result<(String, Params), String> {
    let mut params = Params::default();
    if conn.contains("://") {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_owned(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("the value of {key} is not UTF-8"))?;
            if !params.take(key, value.into_owned())? {
                kept.push(pair);
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        return Ok((rest, params));
    }
    let mut rest = String::new();
    for (raw, key, value) in words(conn)? {
        if !params.take(&key, value)? {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(raw);
        }
    }
    Ok((rest, params))
}

/// The `key=value` words of a connection string: each word as written,
/// its key, and its value (unquoted: `'a value'`, with `\'` and `\\`).
fn words(conn: &str) -> Result<Vec<(&str, String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = conn.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return Ok(out);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("{key} has no value (write {key}=VALUE)"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("the value of {key} is not closed")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("the value of {key} is not closed")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(conn.len(), |&(i, _)| i);
        out.push((&conn[start..end], key, value));
    }
}

/// A file of libpq's defaults (`~/.postgresql/NAME`), where it exists.
#[cfg(any(feature = "tls", test))]
fn default_file(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(std::env::var_os("HOME")?)
        .join(".postgresql")
        .join(name);
    path.is_file().then_some(path)
}

/// How connections are made: with or without a TLS connector.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    #[cfg(feature = "tls")]
    OpenSsl(postgres_openssl::MakeTlsConnector),
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::Plain => f.write_str("Plain"),
            #[cfg(feature = "tls")]
            Tls::OpenSsl(_) => f.write_str("OpenSsl"),
        }
    }
}

impl Tls {
    /// The connector `params` ask for, with `config`'s mode set to match.
    pub(crate) fn new(params: &Params, config: &mut Config) -> Result<Tls, String> {
        let mode = params.mode.unwrap_or(Mode::Prefer);
        let unix_only = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| !matches!(h, Host::Tcp(_)));
        if mode == Mode::Disable || unix_only {
            config.ssl_mode(SslMode::Disable);
            return Ok(Tls::Plain);
        }
        config.ssl_mode(match mode {
            Mode::Allow | Mode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        Tls::connector(mode, params, config)
    }

    #[cfg(not(feature = "tls"))]
    fn connector(mode: Mode, params: &Params, config: &mut Config) -> Result<Tls, String> {
        let asked = if mode == Mode::Require || mode.verifies() {
            Some(format!("sslmode={}", mode.name()))
        } else if params.root_cert.is_some() {
            Some("sslrootcert".to_owned())
        } else if params.cert.is_some() || params.key.is_some() {
            Some("sslcert".to_owned())
        } else {
            None
        };
        match asked {
            Some(what) => Err(format!(
                "{what} needs an encrypted connection, and this build has none: enable the \
                 `postgres-tls` feature of rederive (the `tls` feature of rederive-postgres), \
                 which builds with OpenSSL (Debian: apt-get install libssl-dev)"
            )),
            None => {
                config.ssl_mode(SslMode::Disable);
                Ok(Tls::Plain)
            }
        }
    }

    #[cfg(feature = "tls")]
    fn connector(mode: Mode, params: &Params, _config: &mut Config) -> Result<Tls, String> {
        use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
        let ssl = |what: String| move |e: openssl::error::ErrorStack| format!("{what}: {e}");
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(ssl("cannot set up TLS".into()))?;
        let root = match params.root_cert.as_deref() {
            Some("system") => {
                builder.set_default_verify_paths().map_err(ssl(
                    "cannot load the system's certificate authorities".into(),
                ))?;
                true
            }
            Some(file) => {
                builder.set_ca_file(file).map_err(ssl(format!(
                    "cannot read the root certificates of sslrootcert={file}"
                )))?;
                true
            }
            None => match default_file("root.crt") {
                Some(file) => {
                    builder.set_ca_file(&file).map_err(ssl(format!(
                        "cannot read the root certificates of {}",
                        file.display()
                    )))?;
                    true
                }
                None if mode.verifies() => {
                    return Err(format!(
                        "sslmode={} checks the server's certificate against root certificates: \
                         give sslrootcert=FILE (or sslrootcert=system for the system's \
                         authorities); ~/.postgresql/root.crt does not exist",
                        mode.name()
                    ))
                }
                None => false,
            },
        };
        builder.set_verify(match root {
            true => SslVerifyMode::PEER,
            false => SslVerifyMode::NONE,
        });
        let cert = params
            .cert
            .clone()
            .map(std::path::PathBuf::from)
            .or_else(|| default_file("postgresql.crt"));
        let key = params
            .key
            .clone()
            .map(std::path::PathBuf::from)
            .or_else(|| default_file("postgresql.key"));
        match (cert, key) {
            (Some(cert), Some(key)) => {
                builder
                    .set_certificate_chain_file(&cert)
                    .map_err(ssl(format!(
                        "cannot read the client certificate {}",
                        cert.display()
                    )))?;
                builder
                    .set_private_key_file(&key, SslFiletype::PEM)
                    .map_err(ssl(format!(
                        "cannot read the client key {} (PEM, not encrypted)",
                        key.display()
                    )))?;
                builder.check_private_key().map_err(ssl(format!(
                    "the client key {} is not the key of {}",
                    key.display(),
                    cert.display()
                )))?;
            }
            (Some(cert), None) => {
                return Err(format!(
                    "the client certificate {} has no key: give sslkey=FILE",
                    cert.display()
                ))
            }
            (None, Some(key)) if params.key.is_some() => {
                return Err(format!(
                    "the client key {} has no certificate: give sslcert=FILE",
                    key.display()
                ))
            }
            (None, _) => {}
        }
        let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
        if mode != Mode::VerifyFull {
            // Only verify-full checks that the certificate names the host.
            connector.set_callback(|connect, _host| {
                connect.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(Tls::OpenSsl(connector))
    }

    /// Opens a connection with this connector.
    pub(crate) fn connect(&self, config: &Config) -> Result<postgres::Client, postgres::Error> {
        match self {
            Tls::Plain => config.connect(postgres::NoTls),
            #[cfg(feature = "tls")]
            Tls::OpenSsl(connector) => config.connect(connector.clone()),
        }
    }
}

/// A word for a failed handshake: what to check.
pub(crate) fn hint(error: &str) -> Option<&'static str> {
    if error.contains("certificate verify failed") {
        Some(
            "the server's certificate was not accepted: it must be signed by an authority of \
             sslrootcert, and with sslmode=verify-full name the host connected to",
        )
    } else if error.contains("server does not support TLS") {
        Some("the server does not accept encrypted connections: its `ssl` setting is off")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_what_is_not_ours() {
        let (rest, p) = split(
            "postgres://me@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://me@h/db?application_name=x&connect_timeout=5"
        );
        assert_eq!(p.mode, Some(Mode::VerifyFull));
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, p) = split("postgres://me@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://me@h/db");
        assert_eq!(p.mode, Some(Mode::Require));
        let (rest, p) = split("postgres://me@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), p),
            ("postgres://me@h/db", Params::default())
        );
    }

    #[test]
    fn words_keep_what_is_not_ours() {
        let (rest, p) = split(
            "host=h  user=me sslmode = verify-ca sslcert='/a b/c.crt' password='it\\'s' sslkey=/k",
        )
        .unwrap();
        assert_eq!(rest, "host=h user=me password='it\\'s'");
        assert_eq!(p.mode, Some(Mode::VerifyCa));
        assert_eq!(p.cert.as_deref(), Some("/a b/c.crt"));
        assert_eq!(p.key.as_deref(), Some("/k"));
        // What is left parses as before.
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = split("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("sslmode=verify is not a mode"), "{e}");
        let e = split("host=h sslmode").unwrap_err();
        assert!(e.contains("sslmode has no value"), "{e}");
        let e = split("host=h sslrootcert='/x").unwrap_err();
        assert!(e.contains("sslrootcert is not closed"), "{e}");
    }

    #[test]
    fn unix_sockets_and_disable_are_plain() {
        for conn in [
            "host=/run/postgresql sslmode=verify-full",
            "postgres://me@h/db?sslmode=disable",
        ] {
            let (rest, p) = split(conn).unwrap();
            let mut config: Config = rest.parse().unwrap();
            assert!(
                matches!(Tls::new(&p, &mut config), Ok(Tls::Plain)),
                "{conn}"
            );
            assert_eq!(config.get_ssl_mode(), SslMode::Disable, "{conn}");
        }
    }

    #[test]
    fn modes_that_need_encryption_say_what_they_need() {
        let (rest, p) = split("postgres://me@h/db?sslmode=verify-full").unwrap();
        let mut config: Config = rest.parse().unwrap();
        let result = Tls::new(&p, &mut config);
        if cfg!(feature = "tls") {
            // No root certificate given (and, as in any test, none at ~).
            if default_file("root.crt").is_none() {
                let e = result.unwrap_err();
                assert!(e.contains("give sslrootcert=FILE"), "{e}");
            }
        } else {
            let e = result.unwrap_err();
            assert!(e.contains("postgres-tls"), "{e}");
        }
        let (rest, p) = split("postgres://me@h/db?sslrootcert=/does/not/exist").unwrap();
        let mut config: Config = rest.parse().unwrap();
        let e = Tls::new(&p, &mut config).unwrap_err();
        assert!(
            e.contains("/does/not/exist") || e.contains("postgres-tls"),
            "{e}"
        );
    }
}
