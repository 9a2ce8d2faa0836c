//! Range reads: rows of one partition in clustering order, combined over live epochs.

use std::collections::BTreeMap;
use std::ops::Bound;

use speedlayer_core::{Epoch, Key, Reading, Value};

use super::Store;
use crate::catalog::ViewType;
use crate::error::{Result, StoreError};

/// One row of a range read.
#[derive(Clone, Debug)]
pub struct RangeRow {
    /// Clustering key of the row.
    pub clustering: Vec<u8>,
    /// Its value combined over the live epochs.
    pub value: Reading,
}

/// Result of a range read.
#[derive(Clone, Debug)]
pub struct RangeRows {
    /// Rows in clustering order.
    pub rows: Vec<RangeRow>,
    /// Combination of every returned row; `None` in an `any` view whose rows are of
    /// different types (or when there are no rows).
    pub total: Option<Reading>,
    /// True when more rows matched than the limit allowed.
    pub truncated: bool,
}

/// Rows of a range read before epochs are combined: each row's state per epoch. What a
/// replica answers a coordinator, which merges replicas per (row, epoch) first.
#[derive(Clone, Debug, Default)]
pub struct RangeStates {
    /// Clustering key → (epoch, state), epochs oldest first.
    pub rows: BTreeMap<Vec<u8>, Vec<(Epoch, Value)>>,
    /// True when more rows matched than the limit allowed.
    pub truncated: bool,
}

impl Store {
    /// Rows of partition `partition` whose clustering key is in `from..=to` (either bound
    /// open when `None`), merged over the live epochs, in clustering order; at most
    /// `limit` rows. Checkpoints first, so the scan sees every acknowledged update.
    pub async fn range(
        &self,
        view: &str,
        partition: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RangeRows> {
        let value_type = self.view(view)?.spec.value_type;
        let states = self.range_states(view, partition, from, to, limit).await?;
        RangeRows::combine(value_type, states, limit)
    }

    /// [`Store::range`] before epochs are combined.
    pub async fn range_states(
        &self,
        view: &str,
        partition: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RangeStates> {
        self.checkpoint().await?;
        let store = self.clone();
        let view = view.to_string();
        tokio::task::spawn_blocking(move || {
            store.scan_range(&view, &partition, from.as_deref(), to.as_deref(), limit)
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }

    fn scan_range(
        &self,
        view: &str,
        partition: &[u8],
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<RangeStates> {
        let view = self.view(view)?;
        let prefix = Key::partition_prefix(partition);
        let lower = [prefix.as_slice(), from.unwrap_or_default()].concat();
        let upper = to.map(|to| [prefix.as_slice(), to].concat());
        let mut states = RangeStates::default();
        for (epoch, keyspace) in self.inner.epochs.of_view(view.id) {
            let end = match &upper {
                Some(upper) => Bound::Included(upper.clone()),
                None => Bound::Unbounded,
            };
            let scan = keyspace.range::<Vec<u8>, _>((Bound::Included(lower.clone()), end));
            for (taken, guard) in scan.enumerate() {
                let (key, bytes) = guard.into_inner()?;
                if !key.starts_with(&prefix) {
                    break;
                }
                if taken == limit {
                    states.truncated = true;
                    break;
                }
                let clustering = key[prefix.len()..].to_vec();
                let state = Value::decode(&bytes)?;
                states
                    .rows
                    .entry(clustering)
                    .or_default()
                    .push((epoch, state));
            }
        }
        Ok(states)
    }
}

impl RangeRows {
    /// Combines each row's epochs (see [`Reading`]) and the rows into a total, keeping
    /// the first `limit` rows.
    pub fn combine(value_type: ViewType, states: RangeStates, limit: usize) -> Result<RangeRows> {
        let truncated = states.truncated || states.rows.len() > limit;
        let mut total = match value_type {
            ViewType::Typed(t) => Some(Reading::empty(t)),
            ViewType::Any => None,
        };
        let mut mixed = false;
        let mut out = Vec::with_capacity(states.rows.len().min(limit));
        for (clustering, parts) in states.rows.into_iter().take(limit) {
            let mut value: Option<Reading> = None;
            for (_, state) in &parts {
                Reading::add_part_to(&mut value, state)?;
            }
            let Some(value) = value else { continue };
            match &mut total {
                Some(total) => mixed |= total.combine(&value).is_err(),
                None => total = Some(value.clone()),
            }
            out.push(RangeRow { clustering, value });
        }
        if mixed {
            total = None;
        }
        Ok(RangeRows {
            rows: out,
            total,
            truncated,
        })
    }
}
