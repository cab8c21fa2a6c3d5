//! Input writes: `put`, `put_all`, `delete`, and listing input keys.

use super::{Db, BATCH};
use crate::error::{Error, Result};
use crate::row::Input;
use crate::value::Key;

impl Db {
    /// Writes one input row (insert or replace), as one revision.
    pub fn put<T: Input>(&self, row: T) -> Result<()> {
        self.put_all(std::iter::once(row))
    }

    /// Writes many input rows of one table in one transaction and one revision.
    pub fn put_all<T: Input>(&self, rows: impl IntoIterator<Item = T>) -> Result<()> {
        self.id_of::<T>()?;
        let encoded = rows
            .into_iter()
            .map(|r| r.encode())
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|message| Error::Encode {
                table: T::TABLE.name.to_owned(),
                message,
            })?;
        self.store().put_rows(&T::TABLE, &encoded)?;
        Ok(())
    }

    /// The keys of every row of an input table, in key order.
    pub fn keys<T: Input>(&self) -> Result<Vec<Key>> {
        self.id_of::<T>()?;
        let mut out = Vec::new();
        self.for_each_page(
            |after| self.store().keys_after(&T::TABLE, after, BATCH),
            |keys| {
                out.extend(keys);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Deletes an input row and everything derived from it. Returns whether
    /// the row existed.
    pub fn delete<T: Input>(&self, key: impl Into<Key>) -> Result<bool> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.store().delete_row(&self.graph, id, &key)
    }
}
