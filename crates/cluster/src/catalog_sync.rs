//! The cluster-wide view catalog: every node converges on the union of declarations.
//!
//! A declaration is sent to every reachable peer when it is made; a node that missed it
//! (down, partitioned, or started later) learns it from gossip: every ping carries a
//! digest of the sender's catalog, and a node whose digest differs pulls the whole
//! catalog (a handful of small entries) and declares what it lacks. Declarations never
//! change once made, so the union is the merge. Two nodes that declared one name
//! differently while partitioned keep their own and count a conflict (a metric and a log
//! line name it); the operator resolves it.
//!
//! The digest also covers each view's dropped epochs (see [`crate::epoch_drop`]): a node that
//! missed a drop pulls the peer's dropped sets and drops what it lacks.
//!
//! The digest also covers each view's published batch boundary, so a node that missed a
//! publication (see [`crate::import`]) pulls the peer's boundaries and publishes the ones
//! it has staged.

use speedlayer_store::{Store, StoreError, ViewSpec};
use xxhash_rust::xxh3::xxh3_64;

use std::sync::Arc;

use speedlayer_core::BatchBoundary;

use crate::catch_up;
use crate::error::ClusterError;
use crate::node::ClusterNode;
use crate::wire::{Request, Response};

/// `(name, spec JSON)` of every view, by name.
pub fn entries(store: &Store) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = store
        .views()
        .iter()
        .filter_map(|v| {
            serde_json::to_string(&v.spec)
                .ok()
                .map(|spec| (v.name.clone(), spec))
        })
        .collect();
    out.sort();
    out
}

/// A digest of the catalog: equal catalogs give equal digests.
pub fn digest(store: &Store) -> u64 {
    let mut bytes = Vec::new();
    for (name, spec) in entries(store) {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(spec.as_bytes());
        bytes.push(b'\n');
    }
    for (view, epochs) in store.dropped_epochs() {
        bytes.extend_from_slice(format!("dropped {view} {epochs:?}\n").as_bytes());
    }
    for (view, boundary, import) in store.published_boundaries() {
        bytes.extend_from_slice(format!("batch {view} {boundary} {import}\n").as_bytes());
    }
    xxh3_64(&bytes)
}

/// Declares a view a peer holds. An identical declaration is a no-op; a conflicting one
/// is logged and counted, and refused.
pub(crate) async fn learn(inner: &ClusterNode, name: &str, spec: &str) -> Result<(), ClusterError> {
    let spec: ViewSpec = serde_json::from_str(spec).map_err(|e| {
        StoreError::Request(speedlayer_api::Error::InvalidDeclaration(format!(
            "from a peer: {e}"
        )))
    })?;
    let store = inner.store.clone();
    let owned = name.to_owned();
    let result = tokio::task::spawn_blocking(move || store.declare_view(&owned, spec))
        .await
        .map_err(|_| StoreError::ShuttingDown)?;
    match result {
        Ok((_, declared)) => {
            if matches!(declared, speedlayer_store::Declared::Created) {
                inner.metrics.catalog_learned.inc();
                tracing::info!(view = %name, "learned a view from a peer");
            }
            Ok(())
        }
        Err(e @ StoreError::Request(speedlayer_api::Error::Conflict { .. })) => {
            inner.metrics.catalog_conflicts.inc();
            tracing::error!(view = %name, error = %e, "a peer declared this view differently; keeping this node's declaration");
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Pulls `member`'s catalog (views, dropped epochs, batch boundaries) and takes what this
/// node lacks. False when `member` did not answer.
pub(crate) async fn pull(inner: &Arc<ClusterNode>, member: usize) -> bool {
    let Ok(Response::Catalog(theirs)) = inner.members.call(member, &Request::Catalog).await else {
        return false;
    };
    let ours = entries(&inner.store);
    for (name, spec) in theirs {
        if ours.iter().any(|(n, s)| *n == name && *s == spec) {
            continue;
        }
        let _ = learn(inner, &name, &spec).await;
    }
    pull_dropped(inner, member).await;
    pull_boundaries(inner, member).await;
    true
}

/// Drops here the epochs `member` knows were dropped and this node does not.
async fn pull_dropped(inner: &Arc<ClusterNode>, member: usize) {
    let Ok(Response::DroppedEpochs(theirs)) =
        inner.members.call(member, &Request::DroppedEpochs).await
    else {
        return;
    };
    for (view, epochs) in theirs {
        inner.heed_dropped(&view, &epochs).await;
    }
}

/// Publishes here the batch boundaries `member` has published and this node has only
/// staged (it missed the publication), and starts catching up on those it never staged
/// (it was down during the import; see [`crate::catch_up`]).
async fn pull_boundaries(inner: &Arc<ClusterNode>, member: usize) {
    let Ok(Response::Boundaries(theirs)) = inner.members.call(member, &Request::Boundaries).await
    else {
        return;
    };
    for (view, boundary, import) in theirs {
        let boundary = BatchBoundary(boundary);
        let Ok(record) = inner.store.batch_record(&view) else {
            continue;
        };
        if record.published >= boundary {
            continue;
        }
        if let Ok(mut known) = inner.known_boundaries.lock() {
            let entry = known.entry(view.clone()).or_default();
            *entry = (*entry).max(boundary);
        }
        let staged = record
            .staged
            .iter()
            .any(|s| s.boundary == boundary && s.import == import && s.finished);
        if !staged {
            catch_up::start(inner, view, boundary, import);
            continue;
        }
        match inner.store.publish(&view, boundary, import).await {
            Ok(_) => {
                tracing::info!(%view, boundary = boundary.0, peer = %inner.members.name(member), "learned a batch publication from a peer")
            }
            Err(e) => {
                tracing::warn!(%view, boundary = boundary.0, error = %e, "publishing a staged batch view a peer published failed; retried on the next gossip round")
            }
        }
    }
}
