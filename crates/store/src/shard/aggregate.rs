//! Pre-aggregated batches ([`crate::ApplyKind::Aggregate`]): every update applied to its
//! key's state one by one, one merged delta per key logged and returned.

use speedlayer_core::{Epoch, Key, Op, Outcome, Value};

use super::{ShardLoop, ShardUpdate, UpdateResults};
use crate::error::{Result, StoreError};
use crate::update_log::{encode_update, LoggedUpdate};

impl ShardLoop {
    /// Applies `batch` update by update (every id still counts once), but logs one merged
    /// delta per key (the join of its updates' deltas, see [`Value::delta`]), and returns
    /// it on the key's last update when deltas were asked for.
    pub(super) fn apply_aggregated(
        &mut self,
        batch: Vec<ShardUpdate>,
        record: &mut Vec<u8>,
    ) -> Result<UpdateResults> {
        if self.shard.commit.is_failed() {
            return Err(StoreError::Failed);
        }
        struct Merged {
            position: usize,
            delta: Value,
            applied: bool,
            ts_us: i64,
            unique: u64,
        }
        let mut merged: hashbrown::HashMap<(u32, Epoch, Key), Merged> = hashbrown::HashMap::new();
        let mut results: UpdateResults = Vec::with_capacity(batch.len());
        let mut want_deltas = false;
        for mut update in batch {
            want_deltas |= update.delta;
            update.delta = true;
            let index = update.index;
            let slot = (update.view_id, update.epoch, update.key.clone());
            let (ts_us, unique) = (update.ts_us, update.unique);
            let (result, delta) = self.apply_one(update, false, None)?;
            if let (Ok(applied), Some(delta)) = (&result, delta) {
                let applied = applied.outcome == Outcome::Applied;
                let position = results.len();
                match merged.entry(slot) {
                    hashbrown::hash_map::Entry::Occupied(mut e) => {
                        let m = e.get_mut();
                        m.delta.merge(&delta)?;
                        m.position = position;
                        m.applied |= applied;
                        m.ts_us = ts_us;
                        m.unique = unique;
                    }
                    hashbrown::hash_map::Entry::Vacant(e) => {
                        e.insert(Merged {
                            position,
                            delta,
                            applied,
                            ts_us,
                            unique,
                        });
                    }
                }
            }
            results.push((index, result, None));
        }
        for ((view_id, epoch, key), m) in merged {
            if m.applied {
                let cached = self.cache.for_write(&self.shard, view_id, epoch, &key)?;
                if !cached.dirty {
                    cached.dirty = true;
                    self.pending.dirty.push(((view_id, epoch), key.clone()));
                }
                let logged = LoggedUpdate::Apply {
                    view_id,
                    epoch,
                    key,
                    op: Op::Merge(Box::new(m.delta.clone())),
                    ts_us: m.ts_us,
                    unique: m.unique,
                    id: None,
                };
                encode_update(record, &logged);
                self.shard.metrics.logged_updates.inc();
            }
            if want_deltas {
                results[m.position].2 = Some(m.delta);
            }
        }
        Ok(results)
    }
}
