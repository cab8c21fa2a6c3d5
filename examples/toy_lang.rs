//! The classic use: a tiny language whose top-level definitions are input
//! rows, and whose stages (parse, check, compile, evaluate) are derived
//! tables. A definition with a syntax error fails in `parse`, shows up in
//! `errors`, and blocks only its own later stages.
//!
//! Run it end to end (sample definitions, refresh, status):
//!
//! ```text
//! cargo run --example toy_lang
//! ```
//!
//! or use it as a CLI over the same database:
//!
//! ```text
//! cargo run --example toy_lang -- explain Value area
//! cargo run --example toy_lang -- errors
//! cargo run --example toy_lang -- define area "3 * (4 + 5)"
//! ```
use rederive::{derive_table, Db, Row};
use serde::{Deserialize, Serialize};

/// A top-level definition: `name = expression`.
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Definition {
    #[row(key)]
    pub name: String,
    pub source: String,
}

/// An expression tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Num(i64),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
}

/// Stage 1: the parsed tree.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Ast {
    pub nodes: i64,
    #[row(json)]
    pub tree: Expr,
}

/// Stage 2: the checked tree (no division by a literal zero).
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Checked {
    pub depth: i64,
}

/// Stage 3: stack-machine code.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Bytecode {
    #[row(json)]
    pub ops: Vec<Op>,
}

/// A stack-machine instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Push(i64),
    Add,
    Sub,
    Mul,
    Div,
}

/// Stage 4: the definition's value.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Value {
    pub value: i64,
}

/// A recursive-descent parser for `+ - * /`, parentheses and integers.
struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        loop {
            self.skip_ws();
            match self.chars.next_if(|(_, c)| *c == '+' || *c == '-') {
                Some((_, '+')) => left = Expr::Add(Box::new(left), Box::new(self.term()?)),
                Some(_) => left = Expr::Sub(Box::new(left), Box::new(self.term()?)),
                None => return Ok(left),
            }
        }
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.atom()?;
        loop {
            self.skip_ws();
            match self.chars.next_if(|(_, c)| *c == '*' || *c == '/') {
                Some((_, '*')) => left = Expr::Mul(Box::new(left), Box::new(self.atom()?)),
                Some(_) => left = Expr::Div(Box::new(left), Box::new(self.atom()?)),
                None => return Ok(left),
            }
        }
    }
    fn atom(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        match self.chars.next() {
            Some((_, '(')) => {
                let e = self.expr()?;
                self.skip_ws();
                match self.chars.next() {
                    Some((_, ')')) => Ok(e),
                    Some((i, c)) => Err(format!("syntax error at {i}: expected `)`, found `{c}`")),
                    None => Err("syntax error: missing `)` at the end".into()),
                }
            }
            Some((i, c)) if c.is_ascii_digit() => {
                let mut s = c.to_string();
                while let Some((_, d)) = self.chars.next_if(|(_, c)| c.is_ascii_digit()) {
                    s.push(d);
                }
                s.parse()
                    .map(Expr::Num)
                    .map_err(|_| format!("syntax error at {i}: number too large"))
            }
            Some((i, c)) => Err(format!("syntax error at {i}: unexpected `{c}`")),
            None => Err("syntax error: unexpected end of input".into()),
        }
    }
}

fn count(e: &Expr) -> (i64, i64) {
    match e {
        Expr::Num(_) => (1, 1),
        Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) => {
            let (na, da) = count(a);
            let (nb, db) = count(b);
            (na + nb + 1, da.max(db) + 1)
        }
    }
}

#[derive_table]
fn parse(def: &Definition) -> Result<Ast, String> {
    let mut p = Parser {
        chars: def.source.char_indices().peekable(),
    };
    let tree = p.expr()?;
    p.skip_ws();
    if let Some((i, c)) = p.chars.next() {
        return Err(format!("syntax error at {i}: unexpected `{c}`"));
    }
    Ok(Ast {
        nodes: count(&tree).0,
        tree,
    })
}

#[derive_table]
fn check(ast: &Ast) -> Result<Checked, String> {
    fn walk(e: &Expr) -> Result<(), String> {
        match e {
            Expr::Num(_) => Ok(()),
            Expr::Div(_, b) if **b == Expr::Num(0) => Err("division by zero".into()),
            Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) => {
                walk(a)?;
                walk(b)
            }
        }
    }
    walk(&ast.tree)?;
    Ok(Checked {
        depth: count(&ast.tree).1,
    })
}

#[derive_table]
fn compile(ast: &Ast, _checked: &Checked) -> Bytecode {
    fn emit(e: &Expr, ops: &mut Vec<Op>) {
        let (a, b, op) = match e {
            Expr::Num(n) => return ops.push(Op::Push(*n)),
            Expr::Add(a, b) => (a, b, Op::Add),
            Expr::Sub(a, b) => (a, b, Op::Sub),
            Expr::Mul(a, b) => (a, b, Op::Mul),
            Expr::Div(a, b) => (a, b, Op::Div),
        };
        emit(a, ops);
        emit(b, ops);
        ops.push(op);
    }
    let mut ops = Vec::new();
    emit(&ast.tree, &mut ops);
    Bytecode { ops }
}

#[derive_table]
fn evaluate(code: &Bytecode) -> Result<Value, String> {
    let mut stack: Vec<i64> = Vec::new();
    for op in &code.ops {
        if let Op::Push(n) = op {
            stack.push(*n);
            continue;
        }
        let (Some(b), Some(a)) = (stack.pop(), stack.pop()) else {
            return Err("stack underflow".into());
        };
        let r = match op {
            Op::Add => a.checked_add(b),
            Op::Sub => a.checked_sub(b),
            Op::Mul => a.checked_mul(b),
            Op::Div if b == 0 => return Err(format!("division by zero: {a} / 0")),
            Op::Div => a.checked_div(b),
            Op::Push(_) => unreachable!(),
        };
        stack.push(r.ok_or_else(|| format!("arithmetic overflow in {a} {op:?} {b}"))?);
    }
    stack
        .pop()
        .map(|value| Value { value })
        .ok_or_else(|| "empty program".into())
}

const SAMPLES: &[(&str, &str)] = &[
    ("answer", "6 * 7"),
    ("area", "3 * (4 + 5)"),
    ("broken", "2 + * 3"),
    ("ratio", "10 / (5 - 5)"),
    ("zero", "1 / 0"),
    ("big", "(1 + 2) * (3 + 4) * (5 + 6)"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // `define NAME SOURCE [--db PATH]` writes a definition; everything
        // else is the CLI.
        Some("define") if args.len() == 4 || (args.len() == 6 && args[4] == "--db") => {
            let path = args
                .get(5)
                .map(Into::into)
                .unwrap_or_else(rederive::cli::default_db_path);
            let result = Db::open(&path).and_then(|db| {
                db.put(Definition {
                    name: args[2].clone(),
                    source: args[3].clone(),
                })
            });
            if let Err(e) = result {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        Some(_) => rederive::cli::main(),
        None => demo(),
    }
}

/// Loads the sample definitions, refreshes, and prints the status.
fn demo() {
    let path = rederive::cli::default_db_path();
    let run = || -> rederive::Result<()> {
        let db = Db::open(&path)?;
        db.put_all(SAMPLES.iter().map(|(n, s)| Definition {
            name: (*n).into(),
            source: (*s).into(),
        }))?;
        let report = db.refresh()?;
        println!("refresh: {report}\n");
        for (name, _) in SAMPLES {
            match db.get::<Value>(*name) {
                Ok(v) => println!("{name} = {}", v.value),
                Err(e) => println!("{name}: {e}"),
            }
        }
        println!();
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let cli = rederive::cli::Cli {
        db: Some(path),
        json: false,
        command: rederive::cli::Command::Status,
    };
    // Status exits 1 when failed rows are present, as they are here on purpose.
    rederive::cli::run(cli);
}
