//! Column values, keys, and the mapping from Rust field types to SQL columns.

use std::fmt;

/// A single stored value, independent of the storage backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL (only in nullable columns).
    Null,
    /// A 64-bit signed integer (integers and bool).
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text (`String` and `#[row(json)]` columns).
    Text(String),
    /// Raw bytes (`Vec<u8>`).
    Blob(Vec<u8>),
}

impl Value {
    /// The name of this value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "INTEGER",
            Value::Real(_) => "REAL",
            Value::Text(_) => "TEXT",
            Value::Blob(_) => "BLOB",
        }
    }
}

/// The SQL type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// INTEGER: integers and bool.
    Integer,
    /// REAL: floats.
    Real,
    /// TEXT: strings and JSON.
    Text,
    /// BLOB: byte vectors.
    Blob,
}

impl SqlType {
    /// The SQL spelling of this type.
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::Integer => "INTEGER",
            SqlType::Real => "REAL",
            SqlType::Text => "TEXT",
            SqlType::Blob => "BLOB",
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql())
    }
}

/// The key of a row: the value of an input table's `#[row(key)]` column, which
/// is also the key of every row derived from it (its *root key*).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(untagged)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
}

impl Key {
    /// The key as a stored value.
    pub fn to_value(&self) -> Value {
        match self {
            Key::Int(i) => Value::Integer(*i),
            Key::Text(s) => Value::Text(s.clone()),
        }
    }

    /// Reads a key back from a stored value.
    pub fn from_value(value: &Value) -> Option<Key> {
        match value {
            Value::Integer(i) => Some(Key::Int(*i)),
            Value::Text(s) => Some(Key::Text(s.clone())),
            _ => None,
        }
    }

    /// The SQL type a column holding this key needs.
    pub fn sql_type(&self) -> SqlType {
        match self {
            Key::Int(_) => SqlType::Integer,
            Key::Text(_) => SqlType::Text,
        }
    }

    /// Converts the key to the given column type, parsing text into an integer
    /// where the column is an integer (as keys typed on a command line are).
    pub fn coerce(self, ty: SqlType) -> Option<Key> {
        match (self, ty) {
            (Key::Int(i), SqlType::Integer) => Some(Key::Int(i)),
            (Key::Text(s), SqlType::Text) => Some(Key::Text(s)),
            (Key::Text(s), SqlType::Integer) => s.trim().parse().ok().map(Key::Int),
            (Key::Int(i), SqlType::Text) => Some(Key::Text(i.to_string())),
            _ => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Key {
    fn from(v: i64) -> Self {
        Key::Int(v)
    }
}
impl From<i32> for Key {
    fn from(v: i32) -> Self {
        Key::Int(v.into())
    }
}
impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Key::Text(v.to_owned())
    }
}
impl From<String> for Key {
    fn from(v: String) -> Self {
        Key::Text(v)
    }
}
impl From<&String> for Key {
    fn from(v: &String) -> Self {
        Key::Text(v.clone())
    }
}
impl From<&Key> for Key {
    fn from(v: &Key) -> Self {
        v.clone()
    }
}

/// A Rust type that maps to one SQL column.
///
/// Implemented for the integer types (`u64`, `usize` and `isize` only for
/// values that fit in an `i64`), `bool`, `f32`,
/// `f64`, `String`, `Vec<u8>` and `Option<T>` of those. Any other serde type
/// can be stored as JSON text with `#[row(json)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no column mapping",
    label = "`{Self}` cannot be stored in a column",
    note = "columns can be integers, floats, bool, String, Vec<u8>, or Option of those",
    note = "to store any serde type as JSON text, mark the field `#[row(json)]`"
)]
pub trait Column: Sized {
    /// The column's SQL type.
    const SQL: SqlType;
    /// Whether the column may hold NULL.
    const NULLABLE: bool = false;
    /// Encodes the value; the error says why it cannot be stored (an
    /// unsigned integer above `i64::MAX`).
    fn to_value(&self) -> Result<Value, String>;
    /// Decodes a stored value; the error says what was found instead.
    fn from_value(value: Value) -> Result<Self, String>;
}

fn mismatch<T>(expected: &str, found: &Value) -> Result<T, String> {
    Err(format!("expected {expected}, found {}", found.kind()))
}

/// Integers are INTEGER columns. Those wider than SQLite's signed 64 bits
/// (`u64`, `usize`) are stored when the value fits, and refused with an
/// error naming the value otherwise.
macro_rules! int_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            const SQL: SqlType = SqlType::Integer;
            fn to_value(&self) -> Result<Value, String> {
                i64::try_from(*self)
                    .map(Value::Integer)
                    .map_err(|_| format!("{self} does not fit in a signed 64-bit INTEGER column"))
            }
            fn from_value(value: Value) -> Result<Self, String> {
                match value {
                    Value::Integer(i) => <$t>::try_from(i)
                        .map_err(|_| format!("integer {i} out of range for {}", stringify!($t))),
                    other => mismatch("INTEGER", &other),
                }
            }
        }
    )*};
}
int_column!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl Column for bool {
    const SQL: SqlType = SqlType::Integer;
    fn to_value(&self) -> Result<Value, String> {
        Ok(Value::Integer(i64::from(*self)))
    }
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Integer(0) => Ok(false),
            Value::Integer(1) => Ok(true),
            Value::Integer(i) => Err(format!("integer {i} is not a bool (0 or 1)")),
            other => mismatch("INTEGER (bool)", &other),
        }
    }
}

impl Column for f64 {
    const SQL: SqlType = SqlType::Real;
    fn to_value(&self) -> Result<Value, String> {
        Ok(Value::Real(*self))
    }
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => mismatch("REAL", &other),
        }
    }
}

impl Column for f32 {
    const SQL: SqlType = SqlType::Real;
    fn to_value(&self) -> Result<Value, String> {
        Ok(Value::Real(f64::from(*self)))
    }
    fn from_value(value: Value) -> Result<Self, String> {
        f64::from_value(value).map(|f| f as f32)
    }
}

impl Column for String {
    const SQL: SqlType = SqlType::Text;
    fn to_value(&self) -> Result<Value, String> {
        Ok(Value::Text(self.clone()))
    }
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s),
            other => mismatch("TEXT", &other),
        }
    }
}

impl Column for Vec<u8> {
    const SQL: SqlType = SqlType::Blob;
    fn to_value(&self) -> Result<Value, String> {
        Ok(Value::Blob(self.clone()))
    }
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            other => mismatch("BLOB", &other),
        }
    }
}

impl<T: Column> Column for Option<T> {
    const SQL: SqlType = T::SQL;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Result<Value, String> {
        match self {
            Some(v) => v.to_value(),
            None => Ok(Value::Null),
        }
    }
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A column type that can be an input table's `#[row(key)]`: `i64` or `String`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a key column",
    label = "a `#[row(key)]` field must be `i64` or `String`"
)]
pub trait KeyColumn: Column {}
impl KeyColumn for i64 {}
impl KeyColumn for String {}

/// Encodes a `#[row(json)]` field (fails for values JSON cannot hold, such as
/// maps with non-string keys).
pub fn json_to_value<T: serde::Serialize>(value: &T) -> Result<Value, String> {
    serde_json::to_string(value)
        .map(Value::Text)
        .map_err(|e| format!("cannot encode as JSON: {e}"))
}

/// Decodes a `#[row(json)]` field.
pub fn json_from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    match value {
        Value::Text(s) => serde_json::from_str(&s).map_err(|e| format!("invalid JSON: {e}")),
        other => mismatch("TEXT (JSON)", &other),
    }
}
