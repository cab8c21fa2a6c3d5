//! Cross-row reads: the [`Ctx`] a `#[derive_table(reads = [..])]` function
//! takes, and the [`ReadError`] its reads can fail with.
//!
//! The `rederive` crate's documentation (section *Cross-row reads*) has an
//! example.

use crate::row::{Row, TableInfo};
use crate::value::{Key, Value};
use std::fmt;

/// What a function's reads go through: `ctx.get::<T>(key)` reads any row of
/// a table the function declares in `#[derive_table(reads = [..])]`, and
/// records the read, so that the row is recomputed when the row read
/// changes (or appears, or is deleted).
///
/// A `Ctx` lives for one call of the function; rederive makes it.
pub struct Ctx<'a> {
    reader: &'a (dyn ReadRows + 'a),
}

/// What a [`Ctx`] reads through (the engine).
pub(crate) trait ReadRows {
    /// The encoded columns of the row `(table, key)`, `None` when no row of
    /// that key exists; the read is recorded.
    fn read(&self, table: &'static TableInfo, key: Key) -> Result<Option<Vec<Value>>, ReadError>;
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(reader: &'a (dyn ReadRows + 'a)) -> Ctx<'a> {
        Ctx { reader }
    }

    /// The row of `T` with this key: `Ok(Some(row))`, or `Ok(None)` when no
    /// such row exists (the function is then computed again when one
    /// appears). A derived row that is missing or stale is computed first.
    ///
    /// `T` must be listed in the function's `reads`. The error says whether
    /// the row read failed or is blocked, or the read closes a cycle (the
    /// row, through its reads, depends on itself); with `?` the function
    /// fails with that message.
    pub fn get<T: Row>(&self, key: impl Into<Key>) -> Result<Option<T>, ReadError> {
        let key = key.into();
        let Some(values) = self.reader.read(&T::TABLE, key.clone())? else {
            return Ok(None);
        };
        T::decode(values)
            .map(Some)
            .map_err(|message| ReadError::Failed {
                table: T::TABLE.name.to_owned(),
                key,
                message: format!("cannot decode the row: {message}"),
            })
    }
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// Why `ctx.get` could not give a row.
///
/// It converts into `String` and is a [`std::error::Error`], so `?` works
/// in functions returning `Result<_, String>` or a boxed error. Whatever
/// the function returns after a [`ReadError::NotReady`] or
/// [`ReadError::Undeclared`] is not stored (see each variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The row read failed: its function returned an error or panicked.
    #[error("`{table}` {key} failed: {message}")]
    Failed {
        /// The table read.
        table: String,
        /// The key read.
        key: Key,
        /// The failed row's message.
        message: String,
    },
    /// The row read is blocked by a failed row.
    #[error("`{table}` {key} is blocked: `{failed_table}` {failed_key} failed")]
    Blocked {
        /// The table read.
        table: String,
        /// The key read.
        key: Key,
        /// The failed row's table.
        failed_table: String,
        /// The failed row's key.
        failed_key: Key,
    },
    /// The read closes a cycle: the row read depends, through reads, on
    /// the row being computed. Every row of the cycle is stored as failed
    /// with a message that names them.
    #[error("{}", cycle_message(.rows))]
    Cycle {
        /// The rows of the cycle, starting from the least (by table name,
        /// then key), each once.
        rows: Vec<(String, Key)>,
    },
    /// The table is not listed in the function's `reads`: the row is
    /// stored as failed with this message, whatever the function returns.
    #[error("`{function}` reads `{table}`, which is not in its `reads`: declare it with `#[derive_table(reads = [{table}, ..])]`")]
    Undeclared {
        /// The function.
        function: String,
        /// The table it tried to read.
        table: String,
    },
    /// The key does not fit the table's key column.
    #[error("`{table}` is keyed by {expected}; {key} is not one")]
    KeyType {
        /// The table read.
        table: String,
        /// The key given.
        key: Key,
        /// The key column's type.
        expected: String,
    },
    /// The row read must be computed first: rederive computes it and then
    /// calls the function again. What this call returns is not stored.
    #[error("`{table}` {key} is not computed yet")]
    NotReady {
        /// The table read.
        table: String,
        /// The key read.
        key: Key,
    },
    /// The database could not be read. The computation is abandoned and
    /// the error returned by the operation that ran it.
    #[error("reading `{table}` {key}: {message}")]
    Storage {
        /// The table read.
        table: String,
        /// The key read.
        key: Key,
        /// What went wrong.
        message: String,
    },
}

/// `cycle: `T` a -> `U` b -> `T` a`.
pub(crate) fn cycle_message(rows: &[(String, Key)]) -> String {
    let mut s = String::from("cycle:");
    for (table, key) in rows.iter().chain(rows.first()) {
        if s.len() > 6 {
            s.push_str(" ->");
        }
        s.push_str(&format!(" `{table}` {key}"));
    }
    s
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_names_its_rows_and_closes() {
        let e = ReadError::Cycle {
            rows: vec![
                ("Linked".into(), Key::from("a")),
                ("Linked".into(), "b".into()),
            ],
        };
        assert_eq!(
            String::from(e),
            "cycle: `Linked` \"a\" -> `Linked` \"b\" -> `Linked` \"a\""
        );
    }

    #[test]
    fn read_errors_convert_for_question_marks() {
        fn f() -> Result<(), Box<dyn std::error::Error>> {
            Err(ReadError::NotReady {
                table: "T".into(),
                key: 1.into(),
            })?
        }
        assert_eq!(f().unwrap_err().to_string(), "`T` 1 is not computed yet");
    }
}
