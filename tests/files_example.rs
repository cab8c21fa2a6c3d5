//! The `files` example: a directory as input rows, refreshed incrementally.
use std::path::PathBuf;
use std::process::Command;

/// The built example binary (cargo builds examples before integration tests).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "could not build the {name} example");
    }
    path
}

fn run(db: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(example("files"))
        .args(args)
        .env("REDERIVE_DB", db)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn only_changed_files_are_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("a.txt"), "the quick brown fox").unwrap();
    std::fs::write(docs.join("sub/b.txt"), "a lazy dog and a fox").unwrap();
    let db = tmp.path().join("files.db");
    let dir = docs.to_str().unwrap();

    let (code, out) = run(&db, &["sync", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 files, 0 deleted; refresh: 4 computed"),
        "{out}"
    );

    // Nothing changed: nothing recomputed.
    let (_, out) = run(&db, &["sync", dir]);
    assert!(out.contains("refresh: 0 computed, 0 unchanged"), "{out}");

    // One file changed, one removed, one added.
    std::fs::write(docs.join("a.txt"), "the quick brown fox jumps").unwrap();
    std::fs::remove_file(docs.join("sub/b.txt")).unwrap();
    std::fs::write(docs.join("c.txt"), "fox fox fox").unwrap();
    let (_, out) = run(&db, &["sync", dir]);
    assert!(
        out.contains("2 files, 1 deleted; refresh: 4 computed"),
        "{out}"
    );

    let (code, out) = run(&db, &["search", dir, "fox"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().map(str::trim).collect::<Vec<_>>(),
        ["3  c.txt", "1  a.txt"]
    );

    let (code, out) = run(&db, &["get", "Stats", "a.txt", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"words\":5"), "{out}");

    let (code, out) = run(&db, &["sync"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("usage"), "{out}");
}
