//! Cluster-wide epoch drops: a delete that nothing can undo.
//!
//! Dropping epoch E of a view is a grow-only record in the view's catalog entry (the set
//! of dropped epochs; union is the merge), not a per-node keyspace delete. The
//! coordinator records it durably on its own node, then tells every peer that is up;
//! each records it before deleting the epoch's keyspace. From then on every replica
//! refuses writes, merges, hints and read repairs that target the epoch
//! (`speedlayer_store_dropped_epoch_refusals_total`), so no replica, hint or repair can
//! bring its data back. A node that was away learns the drop from gossip (the catalog
//! digest covers dropped epochs) or from any peer's read answer, which carries the
//! view's dropped epochs; coordinators leave dropped epochs out of every answer.

use futures_util::future::join_all;
use speedlayer_api::ViewType;
use speedlayer_core::Epoch;
use speedlayer_store::StoreError;

use crate::error::ClusterError;
use crate::node::Cluster;
use crate::wire::{Request, Response};

impl Cluster {
    /// Drops `epoch` of `view` on every node (see the module docs). Returns whether any
    /// node that answered held data of it. Succeeds once it is durable here: nodes that
    /// are down or do not answer learn it from gossip when they are back.
    pub async fn drop_epoch(&self, view: &str, epoch: Epoch) -> Result<bool, ClusterError> {
        let inner = &self.inner;
        let mut existed = inner.store.drop_epochs(view, &[epoch]).await?;
        let request = Request::DropEpochs {
            view: view.to_owned(),
            epochs: vec![epoch.0],
        };
        let peers: Vec<usize> = inner
            .members
            .peers_up(&inner.data_members())
            .into_iter()
            .map(|(member, _)| member)
            .collect();
        let calls = peers.iter().map(|&member| {
            let request = &request;
            async move { (member, inner.members.call(member, request).await) }
        });
        for (member, answer) in join_all(calls).await {
            match answer {
                Ok(Response::Dropped(held)) => existed |= held,
                Ok(other) => {
                    tracing::warn!(peer = %inner.members.name(member), ?other, "unexpected answer to an epoch drop; gossip will tell it")
                }
                Err(e) => {
                    tracing::warn!(peer = %inner.members.name(member), error = %e, "telling a peer about an epoch drop failed; gossip will")
                }
            }
        }
        Ok(existed)
    }

    /// Empties an `any` view (the Redis keyspace) everywhere: drops its current
    /// generation, the one epoch its writes land in (see `Store::epoch_for`).
    pub async fn flush_view(&self, view: &str) -> Result<(), ClusterError> {
        let store = &self.inner.store;
        let spec = store.view(view)?.spec.clone();
        if spec.value_type != ViewType::Any {
            return Err(
                StoreError::Request(speedlayer_api::Error::Unsupported(format!(
                    "view '{view}' keeps its data in time epochs; drop them with \
                 DELETE /v1/views/{view}/epochs/{{epoch}} instead of flushing it"
                )))
                .into(),
            );
        }
        let generation = store.generation(view)?;
        self.drop_epoch(view, generation).await?;
        tracing::info!(%view, generation = generation.0, "view flushed");
        Ok(())
    }
}
