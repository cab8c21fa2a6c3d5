//! The classic use: a tiny language whose top-level definitions are input
//! rows, and whose stages (parse, link, check, compile, evaluate) are
//! derived tables. A definition with a syntax error fails in `parse`, shows
//! up in `errors`, and blocks only its own later stages.
//!
//! Definitions call each other by name: `link` inlines every callee's
//! linked tree through its `ctx` (static linking), so editing a callee
//! recomputes exactly its transitive callers, and recursion is a `cycle`
//! error. Lint rules are rows too, written in the language itself: each
//! `Rule` row becomes a derived table at start-up (a node registered at run
//! time, whose code version is the rule's source).
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
//! cargo run --example toy_lang -- define twice "area * 2"
//! cargo run --example toy_lang -- rule small "8"
//! ```
use rederive::{derive_table, dynamic, Ctx, Db, NodeBuilder, Row};
use serde::{Deserialize, Serialize};

/// A top-level definition: `name = expression`.
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Definition {
    #[row(key)]
    pub name: String,
    pub source: String,
}

/// A lint rule, written in the language: a definition is flagged when its
/// linked tree has more nodes than the rule's expression evaluates to.
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Rule {
    #[row(key)]
    pub name: String,
    pub source: String,
}

/// An expression tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Num(i64),
    /// A call of another definition, by name.
    Ref(String),
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

/// Stage 2: the tree with every call replaced by the callee's linked tree.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Linked {
    pub nodes: i64,
    #[row(json)]
    pub tree: Expr,
}

/// Stage 3: the checked tree (no division by a literal zero).
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Checked {
    pub depth: i64,
}

/// Stage 4: stack-machine code.
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

/// Stage 5: the definition's value.
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
            Some((_, c)) if c.is_ascii_lowercase() || c == '_' => {
                let mut s = c.to_string();
                while let Some((_, d)) = self
                    .chars
                    .next_if(|(_, c)| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                {
                    s.push(d);
                }
                Ok(Expr::Ref(s))
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
        Expr::Num(_) | Expr::Ref(_) => (1, 1),
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

/// Static linking: every call is replaced by the callee's linked tree,
/// read through `ctx` (and so recorded: editing the callee recomputes this
/// row; a call that reaches itself is a cycle error).
#[derive_table(reads = [Linked])]
fn link(ast: &Ast, ctx: &Ctx) -> Result<Linked, String> {
    fn inline(e: &Expr, ctx: &Ctx) -> Result<Expr, String> {
        let pair = |a: &Expr, b: &Expr| -> Result<(Box<Expr>, Box<Expr>), String> {
            Ok((Box::new(inline(a, ctx)?), Box::new(inline(b, ctx)?)))
        };
        Ok(match e {
            Expr::Num(n) => Expr::Num(*n),
            Expr::Ref(name) => match ctx.get::<Linked>(name.as_str())? {
                Some(callee) => callee.tree,
                None => return Err(format!("unknown definition `{name}`")),
            },
            Expr::Add(a, b) => pair(a, b).map(|(a, b)| Expr::Add(a, b))?,
            Expr::Sub(a, b) => pair(a, b).map(|(a, b)| Expr::Sub(a, b))?,
            Expr::Mul(a, b) => pair(a, b).map(|(a, b)| Expr::Mul(a, b))?,
            Expr::Div(a, b) => pair(a, b).map(|(a, b)| Expr::Div(a, b))?,
        })
    }
    let tree = inline(&ast.tree, ctx)?;
    Ok(Linked {
        nodes: count(&tree).0,
        tree,
    })
}

#[derive_table]
fn check(ast: &Linked) -> Result<Checked, String> {
    fn walk(e: &Expr) -> Result<(), String> {
        match e {
            Expr::Num(_) => Ok(()),
            Expr::Ref(name) => Err(format!("`{name}` was not linked")),
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
fn compile(ast: &Linked, _checked: &Checked) -> Bytecode {
    fn emit(e: &Expr, ops: &mut Vec<Op>) {
        let (a, b, op) = match e {
            Expr::Num(n) => return ops.push(Op::Push(*n)),
            // `check` refuses trees with calls left.
            Expr::Ref(_) => return,
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

/// A constant expression's value (a rule's limit).
fn constant(source: &str) -> Result<i64, String> {
    fn eval(e: &Expr) -> Result<i64, String> {
        let (a, b) = match e {
            Expr::Num(n) => return Ok(*n),
            Expr::Ref(name) => return Err(format!("a rule cannot call `{name}`")),
            Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) => {
                (eval(a)?, eval(b)?)
            }
        };
        let r = match e {
            Expr::Add(..) => a.checked_add(b),
            Expr::Sub(..) => a.checked_sub(b),
            Expr::Mul(..) => a.checked_mul(b),
            _ => a.checked_div(b),
        };
        r.ok_or_else(|| format!("arithmetic error in {a} and {b}"))
    }
    let mut p = Parser {
        chars: source.char_indices().peekable(),
    };
    let tree = p.expr()?;
    eval(&tree)
}

/// A lint rule as a derived table `Lint_<name>`: one JSON row per
/// definition, from its linked tree. Its code version is the rule's
/// source, so editing the rule recomputes just its table.
fn rule_node(rule: &Rule) -> rederive::RuntimeNode {
    let source = rule.source.clone();
    NodeBuilder::new(format!("rule_{}", rule.name))
        .input::<Linked>()
        .version(source.clone())
        .output_json(format!("Lint_{}", rule.name), move |_, inputs| {
            let linked: Linked = inputs.get(0)?;
            let limit = constant(&source)?;
            Ok(serde_json::json!({
                "nodes": linked.nodes,
                "limit": limit,
                "ok": linked.nodes <= limit,
            }))
        })
}

/// Registers a node for every rule stored in the database at `path` (the
/// language extending itself): then `Db::open` and the CLI have their
/// tables. A database that does not exist yet has none.
fn register_rules(path: &std::path::Path) {
    if !path.exists() {
        return;
    }
    let Ok(db) = Db::open_to_read(path) else {
        return;
    };
    for key in db.keys::<Rule>().unwrap_or_default() {
        if let Ok(rule) = db.get::<Rule>(key) {
            dynamic::register(rule_node(&rule));
        }
    }
}

/// The database path: `--db PATH` if given, else the CLI's default.
fn db_path(args: &[String]) -> std::path::PathBuf {
    args.iter()
        .position(|a| a == "--db")
        .and_then(|i| args.get(i + 1))
        .map(Into::into)
        .unwrap_or_else(rederive::cli::default_db_path)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    register_rules(&db_path(&args));
    match args.get(1).map(String::as_str) {
        // `rule NAME SOURCE [--db PATH]` writes a lint rule.
        Some("rule") if args.len() == 4 || (args.len() == 6 && args[4] == "--db") => {
            let result = Db::open(db_path(&args)).and_then(|db| {
                db.put(Rule {
                    name: args[2].clone(),
                    source: args[3].clone(),
                })
            });
            if let Err(e) = result {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
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
