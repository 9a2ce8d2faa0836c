//! The cluster as the node's one door: [`Cluster`] implements
//! [`speedlayer_api::Coordinator`], which is all the front ends and ingest hold.

use std::sync::Arc;

use async_trait::async_trait;
use speedlayer_api::{
    ApplyKind, BatchImport, BatchStatus, ClusterStatus, Consistency, Coordinator, Declared,
    EpochInfo, Error, EventLog, ImportReport, KeyAnswers, KeyListing, RangeQuery, RangeRows,
    StorageStats, Update, UpdateResults, View, ViewSpec, WriteOptions,
};
use speedlayer_core::{BatchBoundary, BatchValue, Epoch, Key, ValueType};

use crate::import::Import;
use crate::node::Cluster;

#[async_trait]
impl Coordinator for Cluster {
    fn node_id(&self) -> &str {
        self.inner.store.node_id()
    }

    fn storage_failed(&self) -> bool {
        self.inner.store.has_failed()
    }

    fn defaults(&self) -> WriteOptions {
        Cluster::defaults(self)
    }

    fn views(&self) -> Arc<Vec<Arc<View>>> {
        self.inner.store.views()
    }

    fn view(&self, name: &str) -> Result<Arc<View>, Error> {
        Ok(self.inner.store.view(name)?)
    }

    async fn declare_view(
        &self,
        name: &str,
        spec: ViewSpec,
    ) -> Result<(Arc<View>, Declared), Error> {
        Ok(Cluster::declare_view(self, name, spec).await?)
    }

    fn boundary(&self, view: &str) -> Result<BatchBoundary, Error> {
        Ok(self.inner.read_boundary(view)?)
    }

    fn batch_status(&self, view: &str) -> Result<BatchStatus, Error> {
        Ok(BatchStatus::from(&self.inner.store.batch_record(view)?))
    }

    fn epochs(&self, view: &str) -> Result<Vec<EpochInfo>, Error> {
        Ok(self.inner.store.epochs(view)?)
    }

    async fn checkpoint(&self) -> Result<(), Error> {
        Ok(self.inner.store.checkpoint().await?)
    }

    fn storage_stats(&self) -> StorageStats {
        let metrics = self.inner.store.metrics();
        StorageStats {
            journal_syncs: metrics.fsyncs.get(),
            updates_applied: metrics.updates_applied.get(),
            updates_duplicate: metrics.updates_duplicate.get(),
        }
    }

    async fn drop_epoch(&self, view: &str, epoch: Epoch) -> Result<bool, Error> {
        Ok(Cluster::drop_epoch(self, view, epoch).await?)
    }

    async fn flush_view(&self, view: &str) -> Result<(), Error> {
        Ok(Cluster::flush_view(self, view).await?)
    }

    fn status(&self) -> ClusterStatus {
        Cluster::status(self)
    }

    async fn leave(&self) -> Result<(), Error> {
        Ok(Cluster::leave(self).await?)
    }

    async fn remove_node(&self, addr: &str) -> Result<(), Error> {
        Ok(Cluster::remove_node(self, addr).await?)
    }

    async fn apply(
        &self,
        view: &str,
        updates: Vec<Update>,
        options: WriteOptions,
        kind: ApplyKind,
    ) -> Result<UpdateResults, Error> {
        Ok(Cluster::apply(self, view, updates, options, kind).await?)
    }

    async fn delete(
        &self,
        view: &str,
        keys: Vec<Key>,
        options: WriteOptions,
    ) -> Result<Vec<bool>, Error> {
        Ok(Cluster::delete(self, view, keys, options).await?)
    }

    async fn read(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, Error> {
        Ok(Cluster::read(self, view, keys, consistency).await?)
    }

    async fn read_members(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, Error> {
        Ok(Cluster::read_members(self, view, keys, members, consistency).await?)
    }

    async fn set_cardinality(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<Vec<speedlayer_core::Cardinality>, Error> {
        Ok(Cluster::set_cardinality(self, view, keys, consistency).await?)
    }

    async fn range(&self, query: RangeQuery, consistency: Consistency) -> Result<RangeRows, Error> {
        Ok(Cluster::range(self, query, consistency).await?)
    }

    async fn scan_keys(&self, view: &str, cursor: u64, count: usize) -> Result<KeyListing, Error> {
        Ok(Cluster::scan_keys(self, view, cursor, count).await?)
    }

    async fn begin_import(
        &self,
        view: &str,
        covers_until: u64,
    ) -> Result<Box<dyn BatchImport>, Error> {
        Ok(Box::new(
            Cluster::begin_import(self, view, covers_until).await?,
        ))
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        self.inner.store.event_queue().clone()
    }
}

#[async_trait]
impl BatchImport for Import {
    fn boundary(&self) -> BatchBoundary {
        Import::boundary(self)
    }

    fn value_type(&self) -> ValueType {
        Import::value_type(self)
    }

    async fn stage(&mut self, rows: Vec<(Key, BatchValue)>) -> Result<(), Error> {
        Ok(Import::stage(self, rows).await?)
    }

    async fn finish(self: Box<Self>) -> Result<ImportReport, Error> {
        Ok(Import::finish(*self).await?)
    }
}
