//! A directory of real text files as input rows; per-file statistics and a
//! term index as derived tables, refreshed incrementally when files change.
//!
//! ```text
//! cargo run --example files -- sync  some/dir     # load the directory, refresh
//! cargo run --example files -- search some/dir word  # files containing a word
//! cargo run --example files -- watch some/dir     # keep it fresh as files change (Ctrl-C stops)
//! cargo run --example files -- status            # any rederive CLI command
//! ```
//!
//! Only files whose contents changed are recomputed: `sync` writes every
//! file, but a write equal to the stored row changes nothing.
use notify::{RecursiveMode, Watcher};
use rederive::{derive_table, Db, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A text file: its path relative to the directory, and its contents.
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Document {
    #[row(key)]
    pub path: String,
    pub text: String,
}

/// Per-file statistics.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Stats {
    pub lines: i64,
    pub words: i64,
    pub bytes: i64,
}

/// The file's terms with their counts (the index).
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Terms {
    #[row(json)]
    pub counts: BTreeMap<String, i64>,
}

#[derive_table]
fn stats(doc: &Document) -> Stats {
    Stats {
        lines: doc.text.lines().count() as i64,
        words: doc.text.split_whitespace().count() as i64,
        bytes: doc.text.len() as i64,
    }
}

#[derive_table]
fn terms(doc: &Document) -> Terms {
    let mut counts = BTreeMap::new();
    for word in doc
        .text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    Terms { counts }
}

/// The text files below `dir`, with paths relative to it.
fn read_dir(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes the directory's files as input rows (deleting rows of files that
/// are gone), then refreshes.
fn sync(db: &Db, dir: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let files = read_dir(dir)?;
    let present: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let mut deleted = 0;
    for key in db.keys::<Document>()? {
        if let rederive::Key::Text(path) = &key {
            if !present.contains(path) {
                db.delete::<Document>(key)?;
                deleted += 1;
            }
        }
    }
    db.put_all(
        files
            .into_iter()
            .map(|(path, text)| Document { path, text }),
    )?;
    let report = db.refresh()?;
    Ok(format!(
        "{} files, {deleted} deleted; refresh: {report}",
        present.len()
    ))
}

fn search(db: &Db, word: &str) -> rederive::Result<Vec<(String, i64)>> {
    let word = word.to_lowercase();
    let mut hits = Vec::new();
    for key in db.keys::<Document>()? {
        let terms: Terms = db.get(key.clone())?;
        if let (Some(n), rederive::Key::Text(path)) = (terms.counts.get(&word), key) {
            hits.push((path, *n));
        }
    }
    hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(hits)
}

fn watch(db: &Db, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    println!("{}", sync(db, dir)?);
    while !stop.load(Ordering::SeqCst) {
        if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            // Debounce bursts of events (editors write files in several steps).
            while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
            println!("{}", sync(db, dir)?);
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let db_path = rederive::cli::default_db_path();
    let result: Result<(), Box<dyn std::error::Error>> = match (
        args.get(1).map(String::as_str),
        args.len(),
    ) {
        (Some("sync"), 3) => Db::open(&db_path).map_err(Into::into).and_then(|db| {
            println!("{}", sync(&db, &PathBuf::from(&args[2]))?);
            Ok(())
        }),
        (Some("search"), 4) => Db::open(&db_path).map_err(Into::into).and_then(|db| {
            sync(&db, &PathBuf::from(&args[2]))?;
            for (path, n) in search(&db, &args[3])? {
                println!("{n:>5}  {path}");
            }
            Ok(())
        }),
        (Some("watch"), 3) => Db::open(&db_path)
            .map_err(Into::into)
            .and_then(|db| watch(&db, &PathBuf::from(&args[2]))),
        (Some("sync" | "search" | "watch"), _) | (None, _) => {
            eprintln!("usage: files sync DIR | files search DIR WORD | files watch DIR | files <rederive command>");
            std::process::exit(2);
        }
        _ => rederive::cli::main(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
