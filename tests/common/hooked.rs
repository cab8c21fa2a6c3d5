//! A storage backend that delegates to another and runs a test's hook at
//! one chosen moment of a pass: to hold a refresh exactly where a bug
//! would show (after its last page of changes is read, before it marks
//! the table processed), deterministically.

use rederive::graph::{Graph, TableId};
use rederive::row::TableInfo;
use rederive::storage::*;
use rederive::{Key, Result, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the hook is called with: the table whose pass read its last page.
pub type Hook = Box<dyn FnMut(&str) + Send>;

/// A backend that delegates everything to `inner`, and runs `after_last_page`
/// whenever [`Rows::changed_page`] finds no more changes (a pass has read
/// its last page), before returning.
pub struct Hooked {
    pub inner: Box<dyn Backend>,
    pub after_last_page: Arc<Mutex<Option<Hook>>>,
}

impl Catalog for Hooked {
    fn stored_tables(&self) -> Result<Vec<StoredTable>> {
        self.inner.stored_tables()
    }
    fn apply_schema(&self, graph: &Graph, codes: &[Option<String>]) -> Result<()> {
        self.inner.apply_schema(graph, codes)
    }
    fn drop_table(&self, name: &str) -> Result<bool> {
        self.inner.drop_table(name)
    }
}

impl Rows for Hooked {
    fn put_rows(&self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<Revision> {
        self.inner.put_rows(info, rows)
    }
    fn delete_row(&self, graph: &Graph, id: TableId, key: &Key) -> Result<bool> {
        self.inner.delete_row(graph, id, key)
    }
    fn load(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        values: Values,
    ) -> Result<Vec<Option<RowState>>> {
        self.inner.load(graph, tables, key, values)
    }
    fn changed_page(
        &self,
        graph: &Graph,
        driver: TableId,
        tables: &[TableId],
        after: &ChangeCursor,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ChangedRow>> {
        let page = self
            .inner
            .changed_page(graph, driver, tables, after, limit, values)?;
        if page.is_empty() {
            if let Some(hook) = self
                .after_last_page
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                hook(graph.table(tables[0]).info.name);
            }
        }
        Ok(page)
    }
    fn write_outcomes(
        &self,
        graph: &Graph,
        id: TableId,
        code: &str,
        outcomes: &[Outcome],
        pass: Pass,
        fence: &Fence,
        read_at: Revision,
    ) -> Result<Vec<Written>> {
        self.inner
            .write_outcomes(graph, id, code, outcomes, pass, fence, read_at)
    }
    fn begin_snapshot(&self) -> Result<()> {
        self.inner.begin_snapshot()
    }
    fn end_snapshot(&self) -> Result<()> {
        self.inner.end_snapshot()
    }
    fn is_empty(&self, table: &str) -> Result<bool> {
        self.inner.is_empty(table)
    }
    fn changed_in_range(
        &self,
        info: &TableInfo,
        first: &Key,
        last: &Key,
        after: Revision,
    ) -> Result<bool> {
        self.inner.changed_in_range(info, first, last, after)
    }
    fn scan_page(
        &self,
        graph: &Graph,
        tables: &[TableId],
        after: Option<&Key>,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ScannedRow>> {
        self.inner.scan_page(graph, tables, after, limit, values)
    }
    fn row_count(&self, table: &str) -> Result<u64> {
        self.inner.row_count(table)
    }
    fn keys_after(&self, info: &TableInfo, after: Option<&Key>, limit: usize) -> Result<Vec<Key>> {
        self.inner.keys_after(info, after, limit)
    }
    fn reads_of(&self, graph: &Graph, id: TableId, key: &Key) -> Result<Vec<RecordedRead>> {
        self.inner.reads_of(graph, id, key)
    }
    fn readers_of(&self, graph: &Graph, table: TableId, key: &Key) -> Result<Vec<(TableId, Key)>> {
        self.inner.readers_of(graph, table, key)
    }
    fn readers_changed_since(
        &self,
        graph: &Graph,
        reader: TableId,
        since: Revision,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        self.inner
            .readers_changed_since(graph, reader, since, after, limit)
    }
    fn keys_with_status(
        &self,
        info: &TableInfo,
        status: Status,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        self.inner.keys_with_status(info, status, after, limit)
    }
}

impl Progress for Hooked {
    fn revision(&self) -> Result<Revision> {
        self.inner.revision()
    }
    fn snapshot(&self) -> Result<(Revision, Epoch)> {
        self.inner.snapshot()
    }
    fn watermark(&self, table: &str) -> Result<Revision> {
        self.inner.watermark(table)
    }
    fn mark_processed(&self, table: &str, upto: Revision, epoch: Epoch) -> Result<()> {
        self.inner.mark_processed(table, upto, epoch)
    }
    fn tables_settled(&self, graph: &Graph, tables: &[TableId]) -> Result<bool> {
        self.inner.tables_settled(graph, tables)
    }
    fn load_if_settled(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Option<Option<RowState>>> {
        self.inner.load_if_settled(graph, tables, key)
    }
    fn change_token(&self) -> Result<ChangeToken> {
        self.inner.change_token()
    }
}

impl Leases for Hooked {
    fn register_worker(&self, worker: &str, ttl: Duration) -> Result<()> {
        self.inner.register_worker(worker, ttl)
    }
    fn heartbeat(&self, worker: &str, ttl: Duration) -> Result<()> {
        self.inner.heartbeat(worker, ttl)
    }
    fn claim(
        &self,
        table: &str,
        keys: &[&Key],
        worker: &str,
        owner: &str,
        ttl: Duration,
        mode: ClaimMode,
    ) -> Result<Claim> {
        self.inner.claim(table, keys, worker, owner, ttl, mode)
    }
    fn release(&self, table: &str, fence: &Fence, keys: &[&Key]) -> Result<()> {
        self.inner.release(table, fence, keys)
    }
    fn release_worker(&self, worker: &str) -> Result<()> {
        self.inner.release_worker(worker)
    }
    fn running(&self, table: &str) -> Result<Vec<RunningWork>> {
        self.inner.running(table)
    }
}

impl Backend for Hooked {
    fn connector(&self) -> Option<Arc<dyn Connector>> {
        self.inner.connector()
    }
    fn clock(&self) -> Arc<dyn rederive::clock::Clock> {
        self.inner.clock()
    }
    fn replicas(&self) -> Option<&dyn Replicas> {
        self.inner.replicas()
    }
}
