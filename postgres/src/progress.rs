//! The revision counter, watermarks, epochs, and the change token.

use crate::conn::{Conn, PgResult};
use crate::sql::{key_param, key_type, read_states, state_sql, Source};
use crate::PgStore;
use rederive_runtime::error::Result;
use rederive_runtime::graph::{Graph, TableId};
use rederive_runtime::storage::{ChangeToken, Epoch, Progress, Revision, RowState, Values};
use rederive_runtime::value::Key;

/// Takes the next revision (moving the epoch too with `epoch`, and
/// recording it as the last delete's with `delete`), and with it the row
/// lock on the counter that the transaction holds until it ends: writers
/// commit in the order of their revisions. Returns the new revision and
/// the last delete's.
pub(crate) fn next_revision(
    c: &mut Conn,
    epoch: bool,
    delete: bool,
) -> PgResult<(Revision, Revision)> {
    let row = c.query_one(
        "UPDATE rederive_meta SET revision = revision + 1, \
           epoch = epoch + CASE WHEN $1 THEN 1 ELSE 0 END, \
           last_delete = CASE WHEN $2 THEN revision + 1 ELSE last_delete END \
         RETURNING revision, last_delete",
        &[&epoch, &delete],
    )?;
    c.took_revision();
    Ok((
        Revision::new(row.try_get(0)?),
        Revision::new(row.try_get(1)?),
    ))
}

/// The current revision.
pub(crate) fn current_revision(c: &mut Conn) -> PgResult<Revision> {
    Ok(Revision::new(
        c.query_one("SELECT revision FROM rederive_meta", &[])?
            .try_get(0)?,
    ))
}

/// The names of the derived tables among `tables`.
fn derived_names<'g>(graph: &'g Graph, tables: &[TableId]) -> Vec<&'g str> {
    tables
        .iter()
        .map(|&t| graph.table(t).info)
        .filter(|info| !info.input)
        .map(|info| info.name)
        .collect()
}

/// Whether every table named in `$names` (derived tables, `$count` of
/// them) is marked processed as of the current epoch.
const SETTLED: &str = "(SELECT count(*) FROM rederive_tables WHERE name = ANY($NAMES::text[]) \
     AND epoch_mark >= (SELECT epoch FROM rederive_meta)) = $COUNT::bigint";

fn settled_sql(names: usize, count: usize) -> String {
    SETTLED
        .replace("$NAMES", &format!("${names}"))
        .replace("$COUNT", &format!("${count}"))
}

impl Progress for PgStore {
    fn revision(&self) -> Result<Revision> {
        self.read(current_revision)
    }

    fn snapshot(&self) -> Result<(Revision, Epoch)> {
        self.read(|c| {
            let row = c.query_one("SELECT revision, epoch FROM rederive_meta", &[])?;
            Ok((Revision::new(row.try_get(0)?), Epoch::new(row.try_get(1)?)))
        })
    }

    fn watermark(&self, table: &str) -> Result<Revision> {
        self.read(|c| {
            let row = c.query_one(
                "SELECT watermark FROM rederive_tables WHERE name = $1",
                &[&table],
            )?;
            Ok(Revision::new(row.try_get(0)?))
        })
    }

    fn mark_processed(&self, table: &str, upto: Revision, epoch: Epoch) -> Result<()> {
        self.write_one(|c| {
            c.execute(
                "UPDATE rederive_tables SET watermark = GREATEST(watermark, $2), \
                 epoch_mark = GREATEST(epoch_mark, $3) WHERE name = $1",
                &[&table, &upto.get(), &epoch.get()],
            )?;
            Ok(())
        })
    }

    fn tables_settled(&self, graph: &Graph, tables: &[TableId]) -> Result<bool> {
        let names = derived_names(graph, tables);
        if names.is_empty() {
            return Ok(true);
        }
        let count = names.len() as i64;
        self.read(|c| {
            let sql = format!("SELECT {}", settled_sql(1, 2));
            Ok(c.query_one(&sql, &[&names, &count])?.try_get(0)?)
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
        let names = derived_names(graph, tables);
        let count = names.len() as i64;
        let Some(k) = key_param(key, key_type(graph, last)) else {
            // No row can have this key: settled or not is all there is to say.
            return Ok(self.tables_settled(graph, tables)?.then_some(None));
        };
        self.read(|c| {
            // One statement: whether the tables are settled, and the row.
            let inner = state_sql(graph, &[last], Source::Key, Values::All);
            let sql = format!("SELECT {}, s.* FROM ({inner}) s", settled_sql(2, 3));
            let row = c.query_one(&sql, &[k.as_ref(), &names, &count])?;
            if !row.try_get::<_, bool>(0)? {
                return Ok(None);
            }
            // Column 1 is the inner query's key.
            let mut states = read_states(c, graph, &[last], &row, &mut 2, Values::All)?;
            Ok(Some(states.pop().flatten()))
        })
    }

    /// The revision counter, less the revisions this connection took
    /// itself: one read of one row, changed by every commit of another
    /// connection that writes rows (input rows, results, deletes, schema
    /// changes that drop rows), and by nothing else.
    fn change_token(&self) -> Result<ChangeToken> {
        let mut conn = self.lock()?;
        let own = conn.own_revisions;
        let revision = conn.read(current_revision)?;
        Ok(ChangeToken(revision.get().wrapping_sub(own)))
    }
}
