//! Key listings across the ring (`SCAN`, `KEYS`): the coordinator walks placement hashes
//! in order, partition by partition, asking one live owner of each for the keys it holds.
//!
//! The cursor is a placement hash: where the next page starts. Ring partitions are
//! contiguous ranges of placement hashes and every replica keeps its states in placement
//! order (`speedlayer_store`'s state keys), so a page is one range scan on one owner and
//! the cursor means the same on every node, whatever the ring looks like when the next
//! page is asked for. A partition key's rows share one placement hash and are never split
//! across pages.
//!
//! Each partition is read from one owner (this node when it is one, else the first live
//! owner in preference order, the next on failure): like a read at `one`, a key whose
//! write missed that owner appears once hints or anti-entropy bring it.

use speedlayer_api::KeyListing;
use speedlayer_core::{Key, ValueType};
use speedlayer_store::KeyPage;

use crate::error::ClusterError;
use crate::node::Cluster;
use crate::wire::{Request, Response};

/// Partitions one call visits at most before it answers with a cursor (fewer keys than
/// asked is a valid page), so a sparse keyspace does not make one `SCAN` take every
/// partition's round trip.
const MAX_PARTITIONS_PER_CALL: usize = 256;

impl Cluster {
    /// See [`speedlayer_api::Coordinator::scan_keys`].
    pub async fn scan_keys(
        &self,
        view: &str,
        cursor: u64,
        count: usize,
    ) -> Result<KeyListing, ClusterError> {
        let count = count.max(1);
        self.inner.store.view(view)?;
        // Once per call: every page this node answers itself lists every key acknowledged
        // before the call (a peer checkpoints for each page it is asked for).
        self.inner.store.checkpoint().await?;
        if self.is_single() {
            let page = self
                .inner
                .store
                .scan_keys(view, cursor, u64::MAX, count)
                .await?;
            return Ok(listing(page.keys, page.reached));
        }
        let ring = self.inner.ring();
        let mut keys = Vec::new();
        let mut from = cursor;
        for _ in 0..MAX_PARTITIONS_PER_CALL {
            let partition = ring.partition_of_hash(from);
            let (_, last) = ring.hash_range(partition);
            let want = count.saturating_sub(keys.len()).max(1);
            let page = self
                .scan_partition(view, ring.preference_list(partition), from, last, want)
                .await?;
            keys.extend(page.keys);
            match page.reached.checked_add(1) {
                None => return Ok(listing(keys, u64::MAX)),
                Some(next) => from = next,
            }
            if keys.len() >= count {
                break;
            }
        }
        Ok(listing(keys, from.wrapping_sub(1)))
    }

    /// One page of `from..=last` from the first owner in `owners` that answers.
    async fn scan_partition(
        &self,
        view: &str,
        owners: &[usize],
        from: u64,
        last: u64,
        limit: usize,
    ) -> Result<KeyPage, ClusterError> {
        let members = &self.inner.members;
        let me = members.me();
        let mut order: Vec<usize> = owners
            .iter()
            .copied()
            .filter(|&m| m == me || members.is_up(m))
            .collect();
        // This node first when it is an owner: no round trip.
        order.sort_by_key(|&m| m != me);
        let request = Request::ScanKeys {
            view: view.to_string(),
            from,
            to: last,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        for &member in &order {
            if member == me {
                match self.inner.store.scan_keys(view, from, last, limit).await {
                    Ok(page) => return Ok(page),
                    Err(e) => {
                        tracing::debug!(error = %e, "scanning this node's keys failed");
                        continue;
                    }
                }
            }
            match members.call(member, &request).await {
                Ok(Response::Keys { keys, reached }) => {
                    let keys = keys
                        .into_iter()
                        .map(|(encoded, value_type)| Ok((Key::decode(&encoded)?, value_type)))
                        .collect::<Result<Vec<_>, speedlayer_core::DecodeError>>();
                    match keys {
                        Ok(keys) if reached >= from && reached <= last => {
                            return Ok(KeyPage { keys, reached })
                        }
                        _ => tracing::debug!(member, "a peer's key listing made no sense"),
                    }
                }
                Ok(other) => tracing::debug!(member, ?other, "unexpected answer to ScanKeys"),
                Err(e) => tracing::debug!(member, error = %e, "ScanKeys failed"),
            }
        }
        Err(self.inner.unavailable(1, owners.len(), 0, owners, &[]))
    }
}

/// A listing whose last page covered placement hashes up to `reached`.
fn listing(keys: Vec<(Key, ValueType)>, reached: u64) -> KeyListing {
    KeyListing {
        keys,
        cursor: reached.checked_add(1).unwrap_or(0),
    }
}
