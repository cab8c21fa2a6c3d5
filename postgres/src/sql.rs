//! The pieces of SQL every part shares: identifiers, column types, how
//! keys are stored where a column holds keys of any table, values as
//! typed array parameters, and the queries that read row states.

use crate::conn::{invalid, Conn, Param, PgResult};
use postgres::Row;
use rederive_runtime::error::Error;
use rederive_runtime::graph::{Graph, TableId};
use rederive_runtime::row::{ColumnDef, TableInfo};
use rederive_runtime::storage::{Revision, RowState, RowStatus, Status, Values};
use rederive_runtime::value::{Key, SqlType, Value};
use std::sync::Arc;

/// PostgreSQL's limit on the length of an identifier, in bytes (longer
/// names are silently cut, so two long names could meet).
pub(crate) const MAX_IDENTIFIER: usize = 63;

/// An SQL identifier, quoted (so that names keep their case).
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The column type of an [`SqlType`]. Text sorts byte by byte (`"C"`),
/// as SQLite and Rust sort it, whatever the database's locale.
pub(crate) fn column_type(ty: SqlType) -> &'static str {
    match ty {
        SqlType::Integer => "BIGINT",
        SqlType::Real => "DOUBLE PRECISION",
        SqlType::Text => "TEXT COLLATE \"C\"",
        SqlType::Blob => "BYTEA",
    }
}

/// The type of a parameter holding one value of an [`SqlType`].
pub(crate) fn scalar_type(ty: SqlType) -> &'static str {
    match ty {
        SqlType::Integer => "bigint",
        SqlType::Real => "float8",
        SqlType::Text => "text",
        SqlType::Blob => "bytea",
    }
}

/// The type of a parameter holding an array of values of an [`SqlType`].
pub(crate) fn array_type(ty: SqlType) -> &'static str {
    match ty {
        SqlType::Integer => "bigint[]",
        SqlType::Real => "float8[]",
        SqlType::Text => "text[]",
        SqlType::Blob => "bytea[]",
    }
}

/// The name of a table's key column: the `#[row(key)]` column of an input
/// table, `__key` of a derived one.
pub(crate) fn key_column(info: &TableInfo) -> String {
    match info.key_column() {
        Some(c) if info.input => quote(c.name),
        _ => "__key".to_owned(),
    }
}

/// The type of a table's key column.
pub(crate) fn key_type(graph: &Graph, id: TableId) -> SqlType {
    let info = graph.table(id).info;
    match info.key_column() {
        Some(c) if info.input => c.ty,
        _ => graph.key_type(id),
    }
}

/// Checks that a name fits PostgreSQL's identifiers.
pub(crate) fn check_identifier(table: &str, name: &str) -> Result<(), Error> {
    if name.len() > MAX_IDENTIFIER {
        return Err(invalid(format!(
            "`{table}`: the name `{name}` is {} bytes long; PostgreSQL cuts identifiers at {MAX_IDENTIFIER}",
            name.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Keys in columns that hold keys of any table.

/// The tag of an integer key in its stored form.
const INT_TAG: u8 = 1;
/// The tag of a text key in its stored form.
const TEXT_TAG: u8 = 2;
/// Flips the sign bit, so that signed integers sort as unsigned bytes.
const SIGN: u64 = 1 << 63;

/// A key as stored in the columns that hold keys of any table (leases,
/// recorded reads, tombstones, a blocked row's origin): a tag byte, then
/// the integer as 8 big-endian bytes with its sign bit flipped, or the
/// text's UTF-8 bytes. Integer and text keys never meet, and `bytea`
/// compares byte by byte, so stored keys sort as [`Key`] does: integers
/// first, by value, then text, byte by byte.
pub(crate) fn encode_key(key: &Key) -> Vec<u8> {
    match key {
        Key::Int(i) => {
            let mut out = Vec::with_capacity(9);
            out.push(INT_TAG);
            out.extend_from_slice(&((*i as u64) ^ SIGN).to_be_bytes());
            out
        }
        Key::Text(t) => {
            let mut out = Vec::with_capacity(1 + t.len());
            out.push(TEXT_TAG);
            out.extend_from_slice(t.as_bytes());
            out
        }
    }
}

/// A key from its stored form (`None` for bytes that are no key).
pub(crate) fn decode_key(bytes: &[u8]) -> Option<Key> {
    match bytes.split_first()? {
        (&INT_TAG, rest) => {
            let bytes: [u8; 8] = rest.try_into().ok()?;
            Some(Key::Int((u64::from_be_bytes(bytes) ^ SIGN) as i64))
        }
        (&TEXT_TAG, rest) => String::from_utf8(rest.to_vec()).ok().map(Key::Text),
        _ => None,
    }
}

/// SQL computing the stored form of a key column's value `expr` (the same
/// bytes as [`encode_key`]).
pub(crate) fn encode_key_sql(expr: &str, ty: SqlType) -> String {
    match ty {
        SqlType::Integer => {
            format!("(decode('01', 'hex') || int8send(({expr}) # (-9223372036854775808)::bigint))")
        }
        _ => format!("(decode('02', 'hex') || convert_to(({expr}), 'UTF8'))"),
    }
}

/// SQL computing a key column's value from a stored key `expr` (NULL for
/// a key of the other type), so that a join can seek in the column's
/// index.
pub(crate) fn decode_key_sql(expr: &str, ty: SqlType) -> String {
    match ty {
        SqlType::Integer => format!(
            "(CASE WHEN get_byte({expr}, 0) = 1 AND length({expr}) = 9 THEN \
             ('x' || encode(substring({expr} FROM 2), 'hex'))::bit(64)::bigint \
             # (-9223372036854775808)::bigint END)"
        ),
        _ => format!(
            "(CASE WHEN get_byte({expr}, 0) = 2 THEN \
             convert_from(substring({expr} FROM 2), 'UTF8') END)"
        ),
    }
}

/// A key as a parameter of a key column of type `ty`, converted as SQLite
/// compares keys with a column (`"5"` finds the integer key 5); `None`
/// when it cannot be one (then no row has it).
pub(crate) fn key_param(key: &Key, ty: SqlType) -> Option<Param> {
    match key.clone().coerce(ty)? {
        Key::Int(i) => Some(Box::new(i)),
        Key::Text(t) => Some(Box::new(t)),
    }
}

/// A key converted for a key column of type `ty`, or the error that it
/// cannot be one.
pub(crate) fn coerce_key(key: &Key, ty: SqlType, table: &str) -> Result<Key, Error> {
    key.clone().coerce(ty).ok_or_else(|| Error::KeyType {
        table: table.to_owned(),
        key: key.clone(),
        expected: ty.to_string(),
    })
}

/// A key column's value from a query result.
pub(crate) fn key_at(row: &Row, i: usize, ty: SqlType) -> PgResult<Option<Key>> {
    Ok(match ty {
        SqlType::Integer => row.try_get::<_, Option<i64>>(i)?.map(Key::Int),
        _ => row.try_get::<_, Option<String>>(i)?.map(Key::Text),
    })
}

/// A key column's value from a query result, of whichever type the
/// column has.
pub(crate) fn any_key_at(row: &Row, i: usize) -> PgResult<Option<Key>> {
    let ty = match row.columns().get(i).map(|c| c.type_()) {
        Some(&postgres::types::Type::INT8) => SqlType::Integer,
        _ => SqlType::Text,
    };
    key_at(row, i, ty)
}

/// A stored key from a query result.
pub(crate) fn stored_key_at(row: &Row, i: usize) -> PgResult<Option<Key>> {
    Ok(row
        .try_get::<_, Option<Vec<u8>>>(i)?
        .as_deref()
        .and_then(decode_key))
}

// ---------------------------------------------------------------------------
// Values.

/// The values of one column for many rows, as one typed array parameter
/// (statements write many rows with `unnest`).
pub(crate) enum Column {
    Int(Vec<Option<i64>>),
    Real(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Blob(Vec<Option<Vec<u8>>>),
}

impl Column {
    pub(crate) fn new(ty: SqlType) -> Column {
        match ty {
            SqlType::Integer => Column::Int(Vec::new()),
            SqlType::Real => Column::Real(Vec::new()),
            SqlType::Text => Column::Text(Vec::new()),
            SqlType::Blob => Column::Blob(Vec::new()),
        }
    }

    /// Adds a value, converted as an SQLite STRICT column converts it (an
    /// integer into a REAL column; a REAL that is a whole number into an
    /// INTEGER column); any other mismatch is an error naming the column.
    pub(crate) fn push(&mut self, v: &Value, table: &str, column: &str) -> Result<(), Error> {
        match (&mut *self, v) {
            (Column::Int(c), Value::Null) => c.push(None),
            (Column::Real(c), Value::Null) => c.push(None),
            (Column::Text(c), Value::Null) => c.push(None),
            (Column::Blob(c), Value::Null) => c.push(None),
            (Column::Int(c), Value::Integer(i)) => c.push(Some(*i)),
            (Column::Int(c), Value::Real(f))
                if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64 =>
            {
                c.push(Some(*f as i64))
            }
            (Column::Real(c), Value::Real(f)) => c.push(Some(*f)),
            (Column::Real(c), Value::Integer(i)) => c.push(Some(*i as f64)),
            (Column::Text(c), Value::Text(t)) => c.push(Some(t.clone())),
            (Column::Blob(c), Value::Blob(b)) => c.push(Some(b.clone())),
            _ => {
                let expected = match self {
                    Column::Int(_) => "INTEGER",
                    Column::Real(_) => "REAL",
                    Column::Text(_) => "TEXT",
                    Column::Blob(_) => "BLOB",
                };
                return Err(invalid(format!(
                    "cannot store a {} value in the {expected} column `{column}` of `{table}`",
                    v.kind()
                )));
            }
        }
        Ok(())
    }

    /// Adds a key (of the column's type).
    pub(crate) fn push_key(&mut self, k: &Key) {
        match (self, k) {
            (Column::Int(c), Key::Int(i)) => c.push(Some(*i)),
            (Column::Text(c), Key::Text(t)) => c.push(Some(t.clone())),
            (Column::Int(c), _) => c.push(None),
            (Column::Text(c), _) => c.push(None),
            (Column::Real(c), _) => c.push(None),
            (Column::Blob(c), _) => c.push(None),
        }
    }

    pub(crate) fn into_param(self) -> Param {
        match self {
            Column::Int(c) => Box::new(c),
            Column::Real(c) => Box::new(c),
            Column::Text(c) => Box::new(c),
            Column::Blob(c) => Box::new(c),
        }
    }
}

/// A value column from a query result.
pub(crate) fn value_at(row: &Row, i: usize, ty: SqlType) -> PgResult<Value> {
    Ok(match ty {
        SqlType::Integer => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Integer),
        SqlType::Real => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Real),
        SqlType::Text => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
        SqlType::Blob => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Blob),
    })
}

/// A column's definition in a `CREATE TABLE` or `ADD COLUMN`.
pub(crate) fn column_sql(c: &ColumnDef, force_nullable: bool) -> String {
    let null = if c.nullable || force_nullable {
        ""
    } else {
        " NOT NULL"
    };
    format!("{} {}{null}", quote(c.name), column_type(c.ty))
}

// ---------------------------------------------------------------------------
// Reading row states.

/// Which keys a state query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// One key (`$1`).
    Key,
    /// A page of a driver table's rows changed after a cursor: after the
    /// revision `$1` (without position), or after the position `$2` among
    /// the rows of revision `$1` (with), at most `limit` rows.
    ///
    /// The limit is written into the statement, not bound: with a bound
    /// limit, the cached generic plan guesses a tenth of the table and
    /// joins the page by hashing whole tables (42 ms a page of 512 at
    /// 40,000 rows, against an index lookup a row).
    Changes {
        driver: TableId,
        positioned: bool,
        limit: usize,
    },
    /// A page of the first table's keys in key order, at most `limit`: from
    /// the first, or after the key `$1`.
    Scan { first: bool, limit: usize },
}

/// The SELECT that reads the state of keys in several tables (all of one
/// root), for the keys `source` gives: the key, then each table's state
/// columns (see [`read_states`]), then, for changes, the row's
/// `changed_at`.
pub(crate) fn state_sql(
    graph: &Graph,
    tables: &[TableId],
    source: Source,
    values: Values,
) -> String {
    let scan = matches!(source, Source::Scan { .. });
    let first_key = |a: &str| format!("{a}.{}", key_column(graph.table(tables[0]).info));
    let on = if scan {
        first_key("a0")
    } else {
        "q.k".to_owned()
    };
    let mut select = vec![on.clone()];
    let mut joins = String::new();
    for (i, &id) in tables.iter().enumerate() {
        let t = graph.table(id);
        let a = format!("a{i}");
        select.push(format!("{a}.__changed_at"));
        if t.info.input {
            select.push(format!("{a}.__changed_ms"));
        } else {
            select.push(format!(
                "{a}.__status, {a}.__error, {a}.__origin_key, {a}.__code"
            ));
            select.extend((0..t.inputs.len()).map(|j| format!("{a}.__in_{j}")));
        }
        if values.of(i, tables.len()) {
            select.extend(
                t.info
                    .columns
                    .iter()
                    .map(|c| format!("{a}.{}", quote(c.name))),
            );
        }
        if scan && i == 0 {
            continue;
        }
        // One index lookup per key, whatever the planner estimates: a
        // LATERAL subquery kept apart by `OFFSET 0` is never turned into a
        // hash join over the whole table (which the default costs prefer
        // for a page of a few hundred keys, at tens of ms a page).
        joins.push_str(&format!(
            " LEFT JOIN LATERAL (SELECT * FROM {} x WHERE x.{} = {on} OFFSET 0) {a} ON true",
            quote(t.info.name),
            key_column(t.info)
        ));
    }
    let select = select.join(", ");
    match source {
        Source::Key => format!(
            "SELECT {select} FROM (SELECT $1::{} AS k) q{joins}",
            scalar_type(key_type(graph, tables[0]))
        ),
        Source::Scan { first, limit } => {
            let info = graph.table(tables[0]).info;
            let cond = if first {
                String::new()
            } else {
                format!(" WHERE {} > $1", first_key("a0"))
            };
            format!(
                "SELECT {select} FROM {} a0{joins}{cond} ORDER BY {} LIMIT {limit}",
                quote(info.name),
                first_key("a0")
            )
        }
        Source::Changes {
            driver,
            positioned,
            limit,
        } => {
            let info = graph.table(driver).info;
            let key = key_column(info);
            // One seek in the index on (`__changed_at`, key): the rest of
            // the cursor's revision, then later revisions.
            let cond = if positioned {
                format!(
                    "(__changed_at, {key}) > ($1::bigint, $2::{})",
                    scalar_type(key_type(graph, driver))
                )
            } else {
                "__changed_at > $1::bigint".to_owned()
            };
            format!(
                "SELECT {select}, q.ca FROM (SELECT {key} AS k, __changed_at AS ca FROM {t} \
                 WHERE {cond} ORDER BY __changed_at, {key} LIMIT {limit}) q{joins} \
                 ORDER BY q.ca, q.k",
                t = quote(info.name)
            )
        }
    }
}

/// The number of columns a state query selects for one table.
fn state_columns(graph: &Graph, id: TableId, with_values: bool) -> usize {
    let t = graph.table(id);
    let meta = if t.info.input { 2 } else { 5 + t.inputs.len() };
    meta + if with_values { t.info.columns.len() } else { 0 }
}

/// A code version by its id in `rederive_codes`, looked up once per
/// connection (ids never change once given).
pub(crate) fn code_of(conn: &mut Conn, id: i64) -> PgResult<Option<Arc<str>>> {
    if let Some(code) = conn.codes.get(&id) {
        return Ok(Some(code.clone()));
    }
    let row = conn.query_opt("SELECT code FROM rederive_codes WHERE id = $1", &[&id])?;
    let Some(row) = row else {
        return Ok(None);
    };
    let code: Arc<str> = row.try_get::<_, String>(0)?.into();
    conn.codes.insert(id, code.clone());
    Ok(Some(code))
}

/// Reads the states of `tables` from a row of a state query, from column
/// `*i` on.
pub(crate) fn read_states(
    conn: &mut Conn,
    graph: &Graph,
    tables: &[TableId],
    r: &Row,
    i: &mut usize,
    values: Values,
) -> PgResult<Vec<Option<RowState>>> {
    let mut out = Vec::with_capacity(tables.len());
    for (n, &id) in tables.iter().enumerate() {
        let with_values = values.of(n, tables.len());
        let Some(changed_at) = r.try_get::<_, Option<i64>>(*i)? else {
            // No row: skip its columns.
            *i += state_columns(graph, id, with_values);
            out.push(None);
            continue;
        };
        let t = graph.table(id);
        let mut state = RowState {
            changed_at: Revision::new(changed_at),
            status: RowStatus::Ok,
            code: None,
            ins: Vec::new(),
            values: Vec::new(),
            changed_ms: 0,
        };
        *i += 1;
        if t.info.input {
            state.changed_ms = r.try_get(*i)?;
            *i += 1;
        } else {
            let status: i16 = r.try_get(*i)?;
            let message: Option<String> = r.try_get(*i + 1)?;
            state.status = match Status::from_code(status.into()) {
                Status::Ok => RowStatus::Ok,
                Status::Error => RowStatus::Failed {
                    message: message.unwrap_or_default(),
                },
                Status::Blocked => RowStatus::Blocked {
                    table: message.unwrap_or_default(),
                    key: stored_key_at(r, *i + 2)?.unwrap_or_else(|| Key::Text(String::new())),
                },
            };
            let code: i64 = r.try_get(*i + 3)?;
            state.code = code_of(conn, code)?;
            *i += 4;
            state.ins.reserve_exact(t.inputs.len());
            for _ in 0..t.inputs.len() {
                state.ins.push(Revision::new(r.try_get(*i)?));
                *i += 1;
            }
        }
        if with_values {
            // Failed and blocked rows have no values (their columns are NULL).
            if state.status == RowStatus::Ok {
                state.values.reserve_exact(t.info.columns.len());
                for (c, col) in t.info.columns.iter().enumerate() {
                    state.values.push(value_at(r, *i + c, col.ty)?);
                }
            }
            *i += t.info.columns.len();
        }
        out.push(Some(state));
    }
    Ok(out)
}

/// `$first, $first+1, ..`: `n` numbered placeholders.
pub(crate) fn placeholders(first: usize, n: usize) -> Vec<String> {
    (first..first + n).map(|i| format!("${i}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_sort_as_keys_do() {
        let mut keys = vec![
            Key::Int(i64::MAX),
            Key::Text("b".into()),
            Key::Int(-1),
            Key::Text(String::new()),
            Key::Int(0),
            Key::Text("é".into()),
            Key::Int(i64::MIN),
            Key::Text("ab".into()),
            Key::Text("B".into()),
            Key::Int(1),
        ];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(encode_key).collect();
        keys.sort();
        encoded.sort();
        let decoded: Vec<Key> = encoded.iter().map(|b| decode_key(b).unwrap()).collect();
        assert_eq!(decoded, keys);
    }

    #[test]
    fn integer_and_text_keys_never_meet() {
        assert_ne!(encode_key(&Key::Int(5)), encode_key(&Key::Text("5".into())));
        assert_eq!(decode_key(&[]), None);
        assert_eq!(decode_key(&[1, 2, 3]), None, "an integer needs 8 bytes");
        assert_eq!(decode_key(&[3, 0]), None, "an unknown tag");
        assert_eq!(decode_key(&[2, 0xff]), None, "text must be UTF-8");
    }

    /// The server's encoding and decoding of stored keys agree with ours.
    #[test]
    fn stored_keys_in_sql_are_ours() {
        let Some(url) = crate::testing::database_or_skip("stored_keys_in_sql_are_ours") else {
            return;
        };
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        for i in [i64::MIN, -1_000_000_007, -1, 0, 1, 255, 256, i64::MAX] {
            let sql = format!(
                "SELECT {}, {}",
                encode_key_sql("$1::bigint", SqlType::Integer),
                decode_key_sql("$2::bytea", SqlType::Integer)
            );
            let row = client
                .query_one(&sql, &[&i, &encode_key(&Key::Int(i))])
                .unwrap();
            assert_eq!(row.get::<_, Vec<u8>>(0), encode_key(&Key::Int(i)), "{i}");
            assert_eq!(row.get::<_, Option<i64>>(1), Some(i), "{i}");
        }
        for t in ["", "a", "é", "a b", "\u{1F600}", "\\x01"] {
            let sql = format!(
                "SELECT {}, {}",
                encode_key_sql("$1::text", SqlType::Text),
                decode_key_sql("$2::bytea", SqlType::Text)
            );
            let key = Key::Text(t.to_owned());
            let row = client.query_one(&sql, &[&t, &encode_key(&key)]).unwrap();
            assert_eq!(row.get::<_, Vec<u8>>(0), encode_key(&key), "{t:?}");
            assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(t), "{t:?}");
        }
        // A key of the other type decodes to nothing.
        let sql = format!(
            "SELECT {}, {}",
            decode_key_sql("$1::bytea", SqlType::Integer),
            decode_key_sql("$2::bytea", SqlType::Text)
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &encode_key(&Key::Text("12345678".into())),
                    &encode_key(&Key::Int(7)),
                ],
            )
            .unwrap();
        assert_eq!(row.get::<_, Option<i64>>(0), None);
        assert_eq!(row.get::<_, Option<String>>(1), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("Src"), "\"Src\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
