//! The command-line interface a user's binary embeds:
//!
//! ```no_run
//! // the `main` of a program that declares tables and functions
//! // (through the facade: `rederive::cli::main()`):
//! rederive_runtime::cli::main()
//! ```
//!
//! Every command takes `--db PATH|URL` (a SQLite file or, with the `postgres`
//! feature, a `postgres://` URL; default: `$REDERIVE_DB`, else the
//! program's name with `.db`) and `--json`. Exit codes: 0 ok, 1 failures
//! present where the command reports them, 2 usage or database errors.
//!
//! Replicas (section 5 of the design): `fork PATH` makes one, `sync
//! PATH|URL` syncs two, `serve --listen ADDR` serves one to `sync URL` on
//! other machines, `conflicts` lists rows written concurrently (exit 1
//! while there are some), `retire PATH|URL` hands a replica over.

use crate::engine::Db;
use crate::error::Error;
use crate::graph::TableId;
use crate::staleness::TableReport;
use crate::value::{Key, Value};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Keeps derived data up to date.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The database: a SQLite file, or a `postgres://` URL when the program
    /// is built with rederive's `postgres` feature [default: $REDERIVE_DB,
    /// else the program's name + .db].
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub db: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rows per table: fresh, stale, missing, failed, blocked, running,
    /// settling; input rows in conflict between replicas.
    Status,
    /// Compute every missing and stale row. Beside other workers, take a
    /// share and wait until the rows they hold are done.
    Refresh,
    /// Print one row (computing it first if needed).
    Get {
        /// The table.
        table: String,
        /// The row's key (its root row's key).
        key: String,
    },
    /// Say whether a row is fresh, or why not.
    Explain {
        /// The table.
        table: String,
        /// The row's key.
        key: String,
    },
    /// List failed rows with their messages and the rows they block.
    Errors,
    /// Run failed rows again, then refresh what they unblock.
    Retry,
    /// Keep everything fresh: refresh on input writes (from any process) and
    /// on changes to declared files, until Ctrl-C.
    Watch,
    /// Drop the tables this program no longer has (left by removed
    /// functions or row types; `status` lists them). Derived tables only,
    /// unless `--inputs` is given.
    Prune {
        /// Drop leftover input tables too: their rows are lost for good.
        #[arg(long)]
        inputs: bool,
    },
    /// Make a new replica of the database at PATH (a file that must not
    /// exist), owning half of this replica's clock id. Move it to another
    /// machine and `sync` the two now and then. Never copy a replica's file
    /// by hand to make another one.
    Fork {
        /// The new replica's file.
        path: PathBuf,
    },
    /// Sync with another replica, both ways: a file, or the URL of a
    /// replica that `serve` serves (`http://HOST:PORT`).
    Sync {
        /// The other replica.
        #[arg(value_name = "PATH|URL")]
        peer: String,
    },
    /// Serve the database to replicas that `sync` with its URL, until
    /// Ctrl-C. Plain HTTP with no credentials: listen on loopback or a
    /// private network.
    Serve {
        /// The address to listen on, e.g. `127.0.0.1:4300` (port 0 takes a
        /// free port; the first line printed says which).
        #[arg(long, value_name = "ADDR")]
        listen: String,
    },
    /// List input rows with concurrent versions (from replicas that wrote
    /// the same row offline), each version's values, the winner first. A
    /// new write of the row resolves its conflict.
    Conflicts,
    /// Retire this replica into another one (a file or a URL): send it
    /// everything it lacks and hand it this replica's clock id. This
    /// replica refuses writes from then on.
    Retire {
        /// The replica that takes over.
        #[arg(value_name = "PATH|URL")]
        peer: String,
    },
    /// Print the graph of tables and functions.
    Graph {
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

/// Formats for `graph`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Parses the process's arguments, runs the command, and exits with its code.
pub fn main() -> ! {
    use clap::{CommandFactory, FromArgMatches};
    let program = std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "rederive".into());
    // Usage lines name the user's program; the version is rederive's.
    let command =
        Cli::command()
            .name(program)
            .version(concat!("(rederive ", env!("CARGO_PKG_VERSION"), ")"));
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    std::process::exit(run(cli))
}

/// The default database path: `$REDERIVE_DB`, else `<program>.db`.
pub fn default_db_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REDERIVE_DB") {
        return PathBuf::from(p);
    }
    let program = std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_stem().map(|s| s.to_owned()))
        .unwrap_or_else(|| "rederive".into());
    let mut name = program;
    name.push(".db");
    PathBuf::from(name)
}

/// Runs a parsed command line; returns the exit code (0, 1 or 2).
pub fn run(cli: Cli) -> i32 {
    let path = cli.db.clone().unwrap_or_else(default_db_path);
    match execute(&cli, &path) {
        Ok(code) => code,
        Err(e) => {
            if cli.json {
                println!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("error: {e}");
            }
            2
        }
    }
}

/// Exit code 1 when `failed` is true.
fn failures(failed: bool) -> i32 {
    i32::from(failed)
}

/// How a command opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Create the file and tables as needed (`refresh`).
    Create,
    /// An existing file, whose tables may be created or altered (`retry`,
    /// `prune`).
    Write,
    /// An existing file whose tables are left as they are (`status`,
    /// `explain`, `errors`, `get`).
    Read,
}

fn open(path: &Path, access: Access) -> Result<Db, Error> {
    let url = path
        .to_str()
        .is_some_and(|p| crate::storage::url::url_scheme(p).is_some());
    if access != Access::Create && !url && !path.exists() {
        return Err(Error::NotADatabase {
            path: path.to_owned(),
            reason: "the file does not exist (run `refresh` to create it, or pass --db)".into(),
        });
    }
    match access {
        Access::Read => Db::open_to_read(path),
        Access::Create | Access::Write => Db::open(path),
    }
}

fn table_and_key(db: &Db, table: &str, key: &str) -> Result<(TableId, Key), Error> {
    let id = db.graph().table_id(table)?;
    let key = db.coerce_key(id, Key::Text(key.to_owned()))?;
    Ok((id, key))
}

fn value_json(v: &Value, json_column: bool) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) if json_column => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(b),
    }
}

fn execute(cli: &Cli, path: &Path) -> Result<i32, Error> {
    match &cli.command {
        Command::Graph { format } => {
            let graph = crate::graph::Graph::from_registry()?;
            let text = match format {
                GraphFormat::Dot => graph.to_dot(),
                GraphFormat::Mermaid => graph.to_mermaid(),
            };
            if cli.json {
                println!(
                    "{}",
                    json!({ "format": format!("{format:?}").to_lowercase(), "graph": text })
                );
            } else {
                print!("{text}");
            }
            Ok(0)
        }
        Command::Watch => {
            crate::watch::watch_until_interrupted(path, cli.json)?;
            Ok(0)
        }
        Command::Status => {
            let db = open(path, Access::Read)?;
            let status = db.status()?;
            let bad = status.iter().any(|s| s.failed > 0 || s.blocked > 0);
            if cli.json {
                print_pretty(&status);
            } else {
                println!(
                    "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    "table",
                    "rows",
                    "fresh",
                    "stale",
                    "missing",
                    "failed",
                    "blocked",
                    "running",
                    "settling"
                );
                for s in status.iter().filter(|s| !s.leftover) {
                    let name = if s.input {
                        format!("{} (input)", s.table)
                    } else {
                        s.table.clone()
                    };
                    println!(
                        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        name,
                        s.rows,
                        s.fresh,
                        s.stale,
                        s.missing,
                        s.failed,
                        s.blocked,
                        s.running,
                        s.settling
                    );
                }
                for s in status.iter().filter(|s| s.leftover) {
                    let kind = if s.input { "input table" } else { "table" };
                    println!(
                        "leftover {kind} `{}` ({} rows): no function or row type of this program has it; `prune{}` drops it",
                        s.table,
                        s.rows,
                        if s.input { " --inputs" } else { "" }
                    );
                }
                for s in status.iter().filter(|s| s.conflicts > 0) {
                    println!("{}: {}", s.table, conflicts_line(s.conflicts));
                }
                for s in status.iter().filter(|s| !s.workers.is_empty()) {
                    let each: Vec<String> = s
                        .workers
                        .iter()
                        .map(|w| format!("{} ({})", w.worker, w.rows))
                        .collect();
                    println!(
                        "{}: {} rows running on {}",
                        s.table,
                        s.running,
                        each.join(", ")
                    );
                }
            }
            Ok(failures(bad))
        }
        Command::Refresh => {
            let db = open(path, Access::Create)?;
            let bars = !cli.json && std::io::stdout().is_terminal();
            // A refresh beside other workers waits for the rows they hold
            // (taking them over if their worker dies).
            let report = if bars {
                refresh_with_bars(&db)?
            } else {
                db.refresh()?
            };
            if cli.json {
                print_pretty(&report);
            } else {
                for (table, r) in &report.tables {
                    println!("{table}: {}", table_line(r));
                }
                println!("{report}");
            }
            // Failures present: from this run, or stored from before.
            Ok(failures(report.failed > 0 || db.has_failures()?))
        }
        Command::Retry => {
            let db = open(path, Access::Write)?;
            let report = db.retry()?;
            if cli.json {
                print_pretty(&report);
            } else {
                println!("{report}");
            }
            Ok(failures(report.failed > 0))
        }
        Command::Get { table, key } => {
            let db = open(path, Access::Read)?;
            let (id, key) = table_and_key(&db, table, key)?;
            let info = db.graph().table(id).info;
            match db.get_values(id, &key) {
                Ok(values) => {
                    let mut row = serde_json::Map::new();
                    for (c, v) in info.columns.iter().zip(&values) {
                        row.insert(c.name.to_owned(), value_json(v, c.json));
                    }
                    let row = serde_json::Value::Object(row);
                    if cli.json {
                        println!("{}", json!({ "table": info.name, "key": key, "row": row }));
                    } else {
                        print_pretty(&row);
                    }
                    Ok(0)
                }
                Err(e @ (Error::Failed { .. } | Error::Blocked { .. })) => {
                    if cli.json {
                        println!(
                            "{}",
                            json!({ "table": info.name, "key": key, "error": e.to_string() })
                        );
                    } else {
                        eprintln!("{e}");
                    }
                    Ok(1)
                }
                Err(e) => Err(e),
            }
        }
        Command::Explain { table, key } => {
            let db = open(path, Access::Read)?;
            let (id, key) = table_and_key(&db, table, key)?;
            let s = db.explain_id(id, &key)?;
            if cli.json {
                println!("{}", json!({ "table": table, "key": key, "staleness": s }));
            } else {
                println!("{table} {key}: {s}");
            }
            Ok(0)
        }
        Command::Prune { inputs } => {
            let db = open(path, Access::Write)?;
            let mut dropped = Vec::new();
            let mut kept = Vec::new();
            for t in db.leftover_tables()? {
                if t.input && !inputs {
                    kept.push(t);
                } else {
                    db.drop_leftover_table(&t.name, *inputs)?;
                    dropped.push(t);
                }
            }
            if cli.json {
                println!("{}", json!({ "dropped": dropped, "kept": kept }));
            } else {
                for t in &dropped {
                    println!("dropped `{}` ({} rows)", t.name, t.rows);
                }
                for t in &kept {
                    println!(
                        "kept input table `{}` ({} rows): pass --inputs to drop it",
                        t.name, t.rows
                    );
                }
                if dropped.is_empty() && kept.is_empty() {
                    println!("no leftover tables");
                }
            }
            Ok(0)
        }
        Command::Fork { path: to } => {
            let db = open(path, Access::Write)?;
            let fork = db.fork_replica(to)?;
            let name = fork.replica_meta()?.map(|m| m.name).unwrap_or_default();
            if cli.json {
                println!(
                    "{}",
                    json!({ "forked": fork.location(), "replica": name, "of": db.location() })
                );
            } else {
                println!(
                    "forked replica {name} of {} into {}",
                    db.location(),
                    fork.location()
                );
            }
            Ok(0)
        }
        Command::Sync { peer } => {
            let db = open(path, Access::Write)?;
            let report = crate::replica::sync(&db, open_peer(&db, peer)?.as_ref())?;
            if cli.json {
                print_pretty(&report);
            } else {
                println!("{report}");
                if report.conflicts > 0 {
                    println!("{}", conflicts_line(report.conflicts));
                }
            }
            Ok(0)
        }
        Command::Serve { listen } => {
            let db = open(path, Access::Write)?;
            serve_until_interrupted(&db, listen, cli.json)?;
            Ok(0)
        }
        Command::Conflicts => {
            let db = open(path, Access::Read)?;
            let listed = conflicts(&db)?;
            if cli.json {
                print_pretty(&listed);
            } else if listed.is_empty() {
                println!("no rows in conflict");
            } else {
                for c in &listed {
                    let rows = c["versions"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                    println!(
                        "{} {}: {} versions",
                        c["table"].as_str().unwrap_or_default(),
                        c["key"],
                        rows.len()
                    );
                    for (i, row) in rows.iter().enumerate() {
                        let shown = if row.is_null() {
                            "(deleted)".to_owned()
                        } else {
                            row.to_string()
                        };
                        let mark = if i == 0 { "winner" } else { "      " };
                        println!("    {mark} {shown}");
                    }
                }
                println!(
                    "{}; writing the row again (on a replica that has seen every version) \
                     resolves it",
                    conflicts_line(listed.len() as u64)
                );
            }
            Ok(failures(!listed.is_empty()))
        }
        Command::Retire { peer } => {
            let db = open(path, Access::Write)?;
            let peer = open_peer(&db, peer)?;
            let name = db.replica_meta()?.map(|m| m.name).unwrap_or_default();
            let into = peer.describe()?.location;
            crate::replica::retire(&db, peer.as_ref())?;
            if cli.json {
                println!("{}", json!({ "retired": name, "into": into }));
            } else {
                println!(
                    "retired replica {name} ({}) into {into}; it refuses writes from now on",
                    db.location()
                );
            }
            Ok(0)
        }
        Command::Errors => {
            let db = open(path, Access::Read)?;
            let errors = db.errors()?;
            if cli.json {
                print_pretty(&errors);
            } else if errors.is_empty() {
                println!("no failed rows");
            } else {
                for e in &errors {
                    println!("{} {}: {}", e.table, e.key, e.message);
                    for (t, k) in &e.blocks {
                        println!("    blocks {t} {k}");
                    }
                }
            }
            Ok(failures(!errors.is_empty()))
        }
    }
}

/// Prints `value` as indented JSON (what `--json` prints).
fn print_pretty(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// "N rows in conflict (run `conflicts`)".
fn conflicts_line(n: u64) -> String {
    let rows = if n == 1 { "row" } else { "rows" };
    format!("{n} {rows} in conflict (run `conflicts`)")
}

/// The other side of `sync` and `retire`: a replica served at an
/// `http://` URL, or a file opened with this program's graph.
fn open_peer(db: &Db, location: &str) -> Result<Box<dyn crate::replica::Peer>, Error> {
    if let Some(scheme) = crate::storage::url::url_scheme(location) {
        if scheme != "http" && scheme != "https" {
            return Err(Error::Replica {
                replica: location.to_owned(),
                reason: "a replica is a file, or a server's `http://HOST:PORT` URL \
                         (from `serve`)"
                    .into(),
            });
        }
        return Ok(Box::new(crate::replica::net::HttpPeer::new(location)?));
    }
    let path = Path::new(location);
    if !path.is_file() {
        return Err(Error::Replica {
            replica: location.to_owned(),
            reason: "no such file (a replica is a file made by `fork`, or the URL of \
                     `serve`)"
                .into(),
        });
    }
    let here = std::fs::canonicalize(db.location()).ok();
    if here.is_some() && here == std::fs::canonicalize(path).ok() {
        return Err(Error::Replica {
            replica: location.to_owned(),
            reason: "that is this database itself".into(),
        });
    }
    Ok(Box::new(Db::open_with(path, db.graph().clone())?))
}

/// The rows in conflict, each with its versions' values (the winner first,
/// `null` for a deletion) as JSON objects by column.
fn conflicts(db: &Db) -> Result<Vec<serde_json::Value>, Error> {
    let mut out = Vec::new();
    for c in db.conflicts()? {
        let id = db.graph().table_id(&c.table)?;
        let info = db.graph().table(id).info;
        let versions = {
            let store = db.store();
            let replicas = store.replicas().ok_or_else(|| Error::Replica {
                replica: db.location(),
                reason: "this backend keeps no replicas".into(),
            })?;
            replicas.versions(info, &c.key)?
        };
        let rows: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| match &v.values {
                None => serde_json::Value::Null,
                Some(values) => serde_json::Value::Object(
                    info.columns
                        .iter()
                        .zip(values)
                        .map(|(col, v)| (col.name.to_owned(), value_json(v, col.json)))
                        .collect(),
                ),
            })
            .collect();
        out.push(json!({
            "table": c.table,
            "key": c.key,
            "count": rows.len(),
            "versions": rows,
        }));
    }
    Ok(out)
}

/// `serve`: says where it listens (first line, flushed, so that a script
/// can read the port), then serves until Ctrl-C.
fn serve_until_interrupted(db: &Db, listen: &str, json: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(meta) = db.replica_meta()? else {
        return Err(Error::Replica {
            replica: db.location(),
            reason: "this database never forked, so no replica can sync with it; make one \
                     with `fork PATH` and serve either"
                .into(),
        });
    };
    if meta.retired {
        return Err(Error::Replica {
            replica: db.location(),
            reason: "this replica retired; serve a live one".into(),
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).map_err(|e| Error::Replica {
        replica: db.location(),
        reason: format!("cannot catch Ctrl-C: {e}"),
    })?;
    crate::replica::net::serve(db, listen, &stop, |addr| {
        let url = format!("http://{addr}");
        if json {
            println!(
                "{}",
                json!({ "event": "serving", "replica": meta.name, "db": db.location(), "url": url })
            );
        } else {
            println!(
                "serving replica {} of {} on {url}",
                meta.name,
                db.location()
            );
        }
        let _ = std::io::stdout().flush();
    })
}

fn table_line(r: &TableReport) -> String {
    let mut s = format!(
        "{} computed, {} unchanged, {} failed, {} blocked",
        r.computed, r.unchanged, r.failed, r.blocked
    );
    if r.skipped > 0 {
        s.push_str(&format!(", {} skipped", r.skipped));
    }
    s
}

fn refresh_with_bars(db: &Db) -> Result<crate::staleness::Report, Error> {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<20} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: std::collections::HashMap<String, ProgressBar> = std::collections::HashMap::new();
    let report = db.refresh_with_progress(|table, r| {
        let bar = bars.entry(table.to_owned()).or_insert_with(|| {
            let b = multi.add(ProgressBar::new_spinner());
            b.set_style(style.clone());
            b.set_prefix(table.to_owned());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        bar.set_message(table_line(r));
        bar.tick();
    })?;
    for bar in bars.values() {
        bar.finish();
    }
    Ok(report)
}
