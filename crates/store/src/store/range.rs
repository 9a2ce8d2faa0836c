//! Range reads: rows of one partition in clustering order, combined over live epochs.

use std::collections::BTreeMap;
use std::ops::Bound;

use speedlayer_core::{BatchBoundary, BatchValue, Key, Reading, RowParts, Value};

use speedlayer_api::{RangeRow, RangeRows};

use super::Store;
use crate::catalog::ViewType;
use crate::error::{Result, StoreError};

/// Rows of a range read before parts are combined: each row's batch row and states per
/// epoch. What a replica answers a coordinator, which joins replicas per (row, epoch)
/// first.
#[derive(Clone, Debug, Default)]
pub struct RangeStates {
    /// Clustering key → parts.
    pub rows: BTreeMap<Vec<u8>, RowParts>,
    /// True when more rows matched than the limit allowed.
    pub truncated: bool,
    /// The batch boundary the parts belong to.
    pub boundary: BatchBoundary,
}

impl Store {
    /// Rows of partition `partition` whose clustering key is in `from..=to` (either bound
    /// open when `None`), `batch ⊕ live epochs` at the current batch boundary, in
    /// clustering order; at most `limit` rows. Checkpoints first, so the scan sees every
    /// acknowledged update.
    pub async fn range(
        &self,
        view: &str,
        partition: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RangeRows> {
        let value_type = self.view(view)?.spec.value_type;
        let states = self
            .range_states(view, partition, from, to, limit, None)
            .await?;
        states.combine(value_type, limit)
    }

    /// [`Store::range`] before parts are combined, at boundary `at` (the current one
    /// when `None`; see [`Store::states`]).
    pub async fn range_states(
        &self,
        view: &str,
        partition: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
        at: Option<BatchBoundary>,
    ) -> Result<RangeStates> {
        self.checkpoint().await?;
        let view = self.view(view)?;
        let _reading = self.inner.retire_gate.read().await;
        let (boundary, table) = self.readable(&view, at)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let scan = Scan {
                state_prefix: crate::state_key::partition_prefix(&partition),
                table_prefix: Key::partition_prefix(&partition),
                from: from.unwrap_or_default(),
                to,
                limit,
            };
            let mut states = RangeStates {
                boundary,
                ..RangeStates::default()
            };
            let first = boundary.first_realtime_epoch(view.spec.epoch_secs);
            for (epoch, keyspace) in store.inner.epochs.of_view(view.id) {
                if epoch < first {
                    continue;
                }
                states.truncated |=
                    scan.rows(&keyspace, &scan.state_prefix, |clustering, bytes| {
                        let state = Value::decode(bytes)?;
                        states
                            .rows
                            .entry(clustering)
                            .or_default()
                            .epochs
                            .push((epoch, state));
                        Ok(())
                    })?;
            }
            if let Some(table) = table {
                states.truncated |=
                    scan.rows(&table, &scan.table_prefix, |clustering, bytes| {
                        states.rows.entry(clustering).or_default().batch =
                            Some(BatchValue::decode(bytes)?);
                        Ok(())
                    })?;
            }
            Ok(states)
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }
}

/// One partition's clustering range, as scanned in each keyspace (epochs, batch table).
struct Scan {
    /// The partition's prefix in epoch keyspaces ([`crate::state_key`]).
    state_prefix: Vec<u8>,
    /// Its prefix in batch tables (the encoded key alone: they are read in key order).
    table_prefix: Vec<u8>,
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    limit: usize,
}

impl Scan {
    /// Calls `row` with (clustering key, stored bytes) of the first `limit` rows of the
    /// range in `keyspace`, whose keys of the partition start with `prefix`; true when more
    /// rows were left.
    fn rows(
        &self,
        keyspace: &fjall::Keyspace,
        prefix: &[u8],
        mut row: impl FnMut(Vec<u8>, &[u8]) -> Result<()>,
    ) -> Result<bool> {
        let lower = [prefix, &self.from].concat();
        let end = match &self.to {
            Some(to) => Bound::Included([prefix, to].concat()),
            None => Bound::Unbounded,
        };
        for (taken, guard) in keyspace
            .range::<Vec<u8>, _>((Bound::Included(lower), end))
            .enumerate()
        {
            let (key, bytes) = guard.into_inner()?;
            if !key.starts_with(prefix) {
                break;
            }
            if taken == self.limit {
                return Ok(true);
            }
            row(key[prefix.len()..].to_vec(), &bytes)?;
        }
        Ok(false)
    }
}

impl RangeStates {
    /// Combines each row's epochs (see [`Reading`]) and the rows into a total, keeping
    /// the first `limit` rows.
    pub fn combine(self, value_type: ViewType, limit: usize) -> Result<RangeRows> {
        let states = self;
        let truncated = states.truncated || states.rows.len() > limit;
        let mut total = match value_type {
            ViewType::Typed(t) => Some(Reading::empty(t)),
            ViewType::Any => None,
        };
        let mut mixed = false;
        let mut out = Vec::with_capacity(states.rows.len().min(limit));
        for (clustering, parts) in states.rows.into_iter().take(limit) {
            let Some(value) = parts.reading(value_type.typed())? else {
                continue;
            };
            match &mut total {
                Some(total) => mixed |= total.combine(&value).is_err(),
                None => total = Some(value.clone()),
            }
            out.push(RangeRow {
                clustering,
                value,
                from_batch: parts.batch.is_some(),
                from_realtime: !parts.epochs.is_empty(),
            });
        }
        if mixed {
            total = None;
        }
        Ok(RangeRows {
            rows: out,
            total,
            truncated,
            boundary: states.boundary,
        })
    }
}
