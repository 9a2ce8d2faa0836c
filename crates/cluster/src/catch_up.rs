//! Catching up on a batch import this node missed (it was down while the import ran).
//!
//! Gossip tells the node that a peer published boundary T of a view with import `i`, which
//! it never staged. It stages import `i` itself by copying, page by page, the batch-table
//! rows of the partitions it owns from the peers that hold T, then finishes and publishes
//! like a participant. Until then it answers reads at T with "not staged" (coordinators
//! use the other owners). Every partition it owns must be copied from at least one other
//! owner that holds T; otherwise the attempt is abandoned and the next gossip round
//! (every ping) tries again.

use std::collections::HashSet;
use std::sync::Arc;

use speedlayer_core::{BatchBoundary, BatchValue, Key};
use speedlayer_store::StoreError;

use crate::error::ClusterError;
use crate::node::ClusterNode;
use crate::wire::{self, Request, Response};

/// Rows asked for per page.
const PAGE_ROWS: u32 = 8192;

/// Starts catching up on `(view, boundary, import)` in the background, unless an attempt
/// is already running.
pub(crate) fn start(inner: &Arc<ClusterNode>, view: String, boundary: BatchBoundary, import: u64) {
    let key = (view.clone(), boundary.0);
    let fresh = inner
        .catching_up
        .lock()
        .map(|mut running| running.insert(key.clone()))
        .unwrap_or(false);
    if !fresh {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        tracing::info!(%view, boundary = boundary.0, "catching up on a batch import this node missed");
        match copy_and_publish(&inner, &view, boundary, import).await {
            Ok(rows) => {
                tracing::info!(%view, boundary = boundary.0, rows, "caught up on a batch import")
            }
            Err(e) => {
                tracing::warn!(%view, boundary = boundary.0, error = %e, "catching up on a batch import failed; retried on the next gossip round");
                if let Err(e) = inner.store.abort_import(&view, import).await {
                    tracing::debug!(error = %e, "abandoning the partial copy");
                }
            }
        }
        if let Ok(mut running) = inner.catching_up.lock() {
            running.remove(&key);
        }
    });
}

async fn copy_and_publish(
    inner: &ClusterNode,
    view: &str,
    boundary: BatchBoundary,
    import: u64,
) -> Result<u64, ClusterError> {
    let store = &inner.store;
    store.stage_begin(view, boundary, import).await?;
    // Partitions this node owns, or is taking over.
    let (ring, next) = (inner.ring(), inner.next_ring());
    let me = inner.members.me();
    let mine: HashSet<u32> = (0..ring.partitions())
        .filter(|&p| ring.preference_list(p).contains(&me) || next.preference_list(p).contains(&me))
        .collect();
    let mut covered: HashSet<u32> = HashSet::new();
    let mut rows = 0;
    let peers: Vec<usize> = inner
        .members
        .peers_up(&inner.data_members())
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    for member in peers {
        if let Some(copied) = copy_from(inner, member, view, boundary, import, &mine).await? {
            rows += copied;
            covered.extend(
                mine.iter()
                    .filter(|&&p| ring.preference_list(p).contains(&member)),
            );
        }
        if covered.len() == mine.len() {
            break;
        }
    }
    if covered.len() < mine.len() {
        return Err(ClusterError::Request(speedlayer_api::Error::Import {
            node: inner.members.name(inner.members.me()).to_string(),
            reason: format!(
                "{} of this node's partitions have no reachable owner holding the import",
                mine.len() - covered.len()
            ),
        }));
    }
    store.stage_finish(view, boundary, import).await?;
    store.publish(view, boundary, import).await?;
    Ok(rows)
}

/// Copies the rows of this node's partitions from `member`'s table; `None` when it does
/// not hold the boundary (or fails), so another owner must.
async fn copy_from(
    inner: &ClusterNode,
    member: usize,
    view: &str,
    boundary: BatchBoundary,
    import: u64,
    mine: &HashSet<u32>,
) -> Result<Option<u64>, ClusterError> {
    let mut after = None;
    let mut copied = 0;
    loop {
        let request = Request::BatchPage {
            view: view.to_owned(),
            boundary: boundary.0,
            after: after.clone(),
            limit: PAGE_ROWS,
        };
        let page = match inner.members.call(member, &request).await {
            Ok(Response::BatchPage(page)) => page,
            _ => return Ok(None),
        };
        let full = page.len() == PAGE_ROWS as usize;
        after = page.last().map(|(key, _)| key.clone());
        let mut rows = Vec::new();
        for (key, value) in &page {
            let key: Key = wire::key(key)
                .map_err(|e| StoreError::Request(speedlayer_api::Error::BatchRow(e.to_string())))?;
            if mine.contains(&inner.ring().partition_of(&key.partition)) {
                rows.push((key, BatchValue::decode(value).map_err(StoreError::from)?));
            }
        }
        copied += rows.len() as u64;
        if !rows.is_empty() {
            inner.store.stage_rows(view, boundary, import, rows).await?;
        }
        if !full {
            return Ok(Some(copied));
        }
    }
}
