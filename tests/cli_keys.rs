//! The CLI on an integer-keyed table: a malformed key is a usage error
//! (exit 2), a well-formed one works. (The example binaries have text keys.)
use rederive::cli::{run, Cli, Command};
use rederive::{derive_table, Db, Row};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Reading {
    #[row(key)]
    pub id: i64,
    pub celsius: f64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Fahrenheit {
    pub value: f64,
}

#[derive_table]
fn convert(r: &Reading) -> Fahrenheit {
    Fahrenheit {
        value: r.celsius * 9.0 / 5.0 + 32.0,
    }
}

fn cli(db: &std::path::Path, command: Command) -> i32 {
    run(Cli {
        db: Some(db.to_owned()),
        json: true,
        command,
    })
}

#[test]
fn integer_keys_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    Db::open(&path)
        .unwrap()
        .put(Reading {
            id: 7,
            celsius: 100.0,
        })
        .unwrap();
    let get = |key: &str| Command::Get {
        table: "Fahrenheit".into(),
        key: key.into(),
    };
    assert_eq!(cli(&path, get("7")), 0);
    assert_eq!(cli(&path, get(" 7 ")), 0, "surrounding spaces are fine");
    assert_eq!(cli(&path, get("seven")), 2, "a malformed key");
    assert_eq!(cli(&path, get("7.5")), 2, "not an integer");
    assert_eq!(cli(&path, get("99999999999999999999")), 2, "out of range");
    assert_eq!(cli(&path, get("8")), 2, "no such row");
    let explain = |key: &str| Command::Explain {
        table: "Reading".into(),
        key: key.into(),
    };
    assert_eq!(cli(&path, explain("x")), 2);
    assert_eq!(cli(&path, explain("7")), 0);
    assert_eq!(
        Db::open(&path).unwrap().get::<Fahrenheit>(7).unwrap().value,
        212.0
    );
}
