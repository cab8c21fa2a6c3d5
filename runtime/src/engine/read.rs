//! Reading rows: `get`, which computes a missing or stale derived row (and
//! whatever it needs) before answering.

use super::deps::Session;
use super::Db;
use crate::error::{Error, Result};
use crate::graph::TableId;
use crate::report::Report;
use crate::row::Row;
use crate::storage::{RowState, RowStatus, Values};
use crate::value::{Key, Value};

impl Db {
    /// A fresh row: an input row as stored, or a derived row computed first
    /// if it is missing or stale (with whatever it needs).
    pub fn get<T: Row>(&self, key: impl Into<Key>) -> Result<T> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        let values = self.get_values(id, &key)?;
        T::decode(values).map_err(|message| Error::Decode {
            table: T::TABLE.name.to_owned(),
            key,
            message,
        })
    }

    /// A fresh row of a table of generic JSON rows (a node defined at run
    /// time with [`crate::NodeBuilder::output_json`]), by table name.
    pub fn get_json(&self, table: &str, key: impl Into<Key>) -> Result<serde_json::Value> {
        let id = self.graph.table_id(table)?;
        let key = self.coerce_key(id, key.into())?;
        let decode = |message: String| Error::Decode {
            table: table.to_owned(),
            key: key.clone(),
            message,
        };
        let values = self.get_values(id, &key)?;
        let [value]: [Value; 1] = values
            .try_into()
            .map_err(|_| decode(format!("`{table}` is not a table of JSON rows")))?;
        crate::value::json_from_value(value).map_err(decode)
    }

    /// Like [`Db::get`], by table id, returning the encoded columns.
    pub fn get_values(&self, id: TableId, key: &Key) -> Result<Vec<Value>> {
        if self.graph.table(id).info.input {
            return self
                .load_one(id, key)?
                .map(|s| s.values)
                .ok_or_else(|| self.not_found(id, key));
        }
        // Every table upstream marked settled as of this epoch: the stored
        // row is the answer. Else ask the judge; else compute.
        // (Bound first: a guard in a `match` scrutinee would be held
        // through the arms.)
        let quick = self
            .store()
            .load_if_settled(&self.graph, self.dependencies(id), key)?;
        let state = match quick {
            Some(state) => state,
            None if self.reads_upstream(id) => None,
            None => self.settled_state(id, key)?,
        };
        let state = match state {
            Some(state) => state,
            None => {
                self.ensure(&Session::new(), id, key, &mut Report::default())?;
                self.load_one(id, key)?
                    .ok_or_else(|| self.not_found(id, key))?
            }
        };
        match state.status {
            RowStatus::Ok => Ok(state.values),
            RowStatus::Failed { message } => Err(Error::Failed {
                table: self.name(id).to_owned(),
                key: key.clone(),
                message,
            }),
            RowStatus::Blocked { table, key: origin } => Err(Error::Blocked {
                table: self.name(id).to_owned(),
                key: key.clone(),
                failed_table: table,
                failed_key: origin,
            }),
        }
    }

    /// One row's stored state, with its values.
    pub(crate) fn load_one(&self, id: TableId, key: &Key) -> Result<Option<RowState>> {
        Ok(self
            .store()
            .load(&self.graph, &[id], key, Values::All)?
            .pop()
            .flatten())
    }

    /// The row's state if the judge finds it settled, read in one query
    /// over the table's ancestors (all keyed alike).
    fn settled_state(&self, id: TableId, key: &Key) -> Result<Option<RowState>> {
        let tables = self.ancestry(id);
        let mut states = self.store().load(&self.graph, tables, key, Values::Last)?;
        let settled = self
            .verdicts(tables, &states, None)
            .pop()
            .flatten()
            .is_some_and(|v| v.is_settled());
        Ok(if settled {
            states.pop().flatten()
        } else {
            None
        })
    }
}
