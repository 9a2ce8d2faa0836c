//! Key listings: the keys with a state in a range of placement hashes, page by page, what
//! a coordinator walks the ring with for `SCAN` and `KEYS`.

use std::collections::BTreeMap;

use speedlayer_core::{Key, Value, ValueType};

use super::Store;
use crate::error::{Result, StoreError};

/// One page of a key listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys that exist (in some live realtime epoch), in placement order, each with its
    /// value type (its first write's in the implicit Redis view).
    pub keys: Vec<(Key, ValueType)>,
    /// The last placement hash the page covers completely: every existing key whose
    /// placement is in `from..=reached` is in `keys`. The next page starts after it; a
    /// page that reached `to` is the range's last.
    pub reached: u64,
}

impl Store {
    /// The existing keys of `view` whose placement hash is in `from..=to`: all of them for
    /// up to `limit` placement hashes (a partition key's rows, which share one, are never
    /// split across pages), as of the last checkpoint: call [`Store::checkpoint`] first
    /// (once per listing call, not per page) to list every key acknowledged before it.
    /// Batch rows are not listed: batch tables are in key order, not placement
    /// order (the implicit Redis view, what `SCAN` lists, has none).
    pub async fn scan_keys(&self, view: &str, from: u64, to: u64, limit: usize) -> Result<KeyPage> {
        let view = self.view(view)?;
        let _reading = self.inner.retire_gate.read().await;
        let (boundary, _) = self.readable(&view, None)?;
        let first = boundary.first_realtime_epoch(view.spec.epoch_secs);
        let store = self.clone();
        let limit = limit.max(1);
        tokio::task::spawn_blocking(move || {
            let mut found: BTreeMap<(u64, Key), ValueType> = BTreeMap::new();
            let mut reached = to;
            for (epoch, keyspace) in store.inner.epochs.of_view(view.id) {
                if epoch < first || from > to {
                    continue;
                }
                let mut placements = 0;
                let mut last = None;
                for guard in
                    keyspace.range::<Vec<u8>, _>(crate::state_key::placement_range(from, reached))
                {
                    let (stored, state) = guard.into_inner()?;
                    let (placement, encoded) = crate::state_key::split(&stored)?;
                    if last != Some(placement) {
                        if let (true, Some(last)) = (placements == limit, last) {
                            reached = reached.min(last);
                            break;
                        }
                        placements += 1;
                        last = Some(placement);
                    }
                    let value = Value::decode(&state)?;
                    if value.exists() {
                        found
                            .entry((placement, Key::decode(encoded)?))
                            .or_insert_with(|| value.value_type());
                    }
                }
            }
            Ok(KeyPage {
                keys: found
                    .into_iter()
                    .filter(|((placement, _), _)| *placement <= reached)
                    .map(|((_, key), value_type)| (key, value_type))
                    .collect(),
                reached,
            })
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }
}
