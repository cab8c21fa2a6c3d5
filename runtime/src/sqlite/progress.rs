//! The revision counter, watermarks, epochs, and the change token.

use super::sql::current_revision;
use super::{run, SqlValue, SqliteStore};
use crate::error::Result;
use crate::graph::{Graph, TableId};
use crate::storage::{ChangeToken, Epoch, Progress, Revision, RowState, Values};
use crate::value::Key;
use rusqlite::params;

impl Progress for SqliteStore {
    fn revision(&self) -> Result<Revision> {
        run(|| current_revision(&self.conn))
    }

    fn snapshot(&self) -> Result<(Revision, Epoch)> {
        run(|| {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT (SELECT value FROM rederive_meta WHERE key = 'revision'), \
                     (SELECT value FROM rederive_meta WHERE key = 'epoch')",
                )?
                .query_row([], |r| Ok((r.get(0)?, Epoch::new(r.get(1)?))))?)
        })
    }

    fn watermark(&self, table: &str) -> Result<Revision> {
        run(|| {
            Ok(self
                .conn
                .prepare_cached("SELECT watermark FROM rederive_tables WHERE name = ?1")?
                .query_row([table], |r| r.get(0))?)
        })
    }

    fn mark_processed(&self, table: &str, upto: Revision, epoch: Epoch) -> Result<()> {
        run(|| self.end_snapshot_now())?;
        run(|| {
            self.conn
                .prepare_cached(
                    "UPDATE rederive_tables SET watermark = max(watermark, ?2), \
                     epoch_mark = max(epoch_mark, ?3) WHERE name = ?1",
                )?
                .execute(params![table, upto, epoch.get()])?;
            Ok(())
        })
    }

    fn tables_settled(&self, graph: &Graph, tables: &[TableId]) -> Result<bool> {
        let names: Vec<&str> = tables
            .iter()
            .map(|&t| graph.table(t).info)
            .filter(|info| !info.input)
            .map(|info| info.name)
            .collect();
        if names.is_empty() {
            return Ok(true);
        }
        // One read: every table listed, each marked as of the epoch.
        let sql = format!(
            "SELECT count(*) = {} FROM rederive_tables WHERE name IN ({}) \
             AND epoch_mark >= (SELECT value FROM rederive_meta WHERE key = 'epoch')",
            names.len(),
            vec!["?"; names.len()].join(", ")
        );
        run(|| {
            Ok(self
                .conn
                .prepare_cached(&sql)?
                .query_row(rusqlite::params_from_iter(&names), |r| r.get(0))?)
        })
    }

    fn load_if_settled(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Option<Option<RowState>>> {
        let Some(&last) = tables.last() else {
            return Ok(None);
        };
        run(|| {
            let sql = self.cache.settled_sql(graph, tables);
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let k = key.to_value();
            Ok(stmt.query_row([SqlValue(&k)], |r| {
                let settled: bool = r.get(0)?;
                if !settled {
                    return Ok(None);
                }
                // Column 1 is the inner query's key.
                let mut states =
                    self.cache
                        .read_states(&self.conn, graph, &[last], r, &mut 2, Values::All)?;
                Ok(Some(states.pop().flatten()))
            })?)
        })
    }

    /// SQLite's `PRAGMA data_version`: one integer, changed by every commit
    /// of another connection.
    fn change_token(&self) -> Result<ChangeToken> {
        run(|| {
            Ok(ChangeToken(self.conn.query_row(
                "PRAGMA data_version",
                [],
                |r| r.get(0),
            )?))
        })
    }
}
