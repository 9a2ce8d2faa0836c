//! The read path: ask the owners, merge what R of them answer, repair the stale ones.
//!
//! Replicas answer with each key's state **per epoch**; the coordinator joins them epoch
//! by epoch (replicas of one epoch are CRDT states: join is the merge) and only then
//! combines epochs into a reading (epochs are disjoint parts: counters add). A replica
//! whose state differs from the join is stale and gets the join (read repair): before
//! the answer at `all`, in the background otherwise (once the remaining owners have
//! answered too).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use speedlayer_core::{Epoch, Key, Reading, Value};
use speedlayer_store::{RangeRows, RangeStates};

use crate::consistency::Consistency;
use crate::error::ClusterError;
use crate::node::{Cluster, Deltas, Inner};
use crate::wire::{self, Request, Response};

/// A key's states per epoch.
type Parts = Vec<(Epoch, Value)>;

impl Cluster {
    /// The values of `keys` in `view` at `consistency`, in order (`None`: no replica
    /// holds the key).
    pub async fn get_many(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<Vec<Option<Reading>>, ClusterError> {
        let inner = &self.inner;
        if self.is_single() || consistency == Consistency::Local {
            return Ok(inner.store.get_many(view, keys).await?);
        }
        inner.store.view(view)?;
        let count = keys.len();
        let groups = inner.ring.group(keys, |k| &k.partition);
        let reads = groups.into_iter().map(|(partition, items)| {
            let owners = inner.ring.preference_list(partition).to_vec();
            let inner = self.inner.clone();
            let view = view.to_owned();
            async move {
                let (indexes, keys): (Vec<usize>, Vec<Key>) = items.into_iter().unzip();
                let parts = read_group(inner, view, owners, keys, consistency).await?;
                Ok::<_, ClusterError>(indexes.into_iter().zip(parts).collect::<Vec<_>>())
            }
        });
        let mut readings: Vec<Option<Reading>> = (0..count).map(|_| None).collect();
        for group in futures_util::future::join_all(reads).await {
            for (index, parts) in group? {
                let mut reading = None;
                for (_, state) in &parts {
                    Reading::add_part_to(&mut reading, state)
                        .map_err(speedlayer_store::StoreError::from)?;
                }
                readings[index] = reading;
            }
        }
        Ok(readings)
    }

    /// Rows of one partition at `consistency` (see [`speedlayer_store::Store::range`]):
    /// the owners' rows joined per (row, epoch), then combined. Not read-repaired.
    pub async fn range(
        &self,
        view: &str,
        partition: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<RangeRows, ClusterError> {
        let inner = &self.inner;
        if self.is_single() || consistency == Consistency::Local {
            return Ok(inner.store.range(view, partition, from, to, limit).await?);
        }
        let value_type = inner.store.view(view)?.spec.value_type;
        let owners = inner
            .ring
            .preference_list(inner.ring.partition_of(&partition))
            .to_vec();
        let n = owners.len();
        let r = consistency.required(n);
        let request = Request::Range {
            view: view.to_owned(),
            partition: partition.clone(),
            from: from.clone(),
            to: to.clone(),
            limit: limit as u64,
        };
        let mut pending = FuturesUnordered::new();
        for &member in owners.iter().filter(|&&m| inner.is_up(m)) {
            let inner = self.inner.clone();
            let (view, partition, from, to, request) = (
                view.to_owned(),
                partition.clone(),
                from.clone(),
                to.clone(),
                request.clone(),
            );
            pending.push(tokio::spawn(async move {
                let answer = if member == inner.me {
                    inner
                        .store
                        .range_states(&view, partition, from, to, limit)
                        .await
                        .ok()
                } else {
                    match inner.call(member, &request).await {
                        Ok(Response::Range { rows, truncated }) => {
                            let mut states = RangeStates {
                                truncated,
                                ..RangeStates::default()
                            };
                            let mut ok = true;
                            for (clustering, parts) in rows {
                                match wire::decode_parts(&parts) {
                                    Ok(parts) => {
                                        states.rows.insert(clustering, parts);
                                    }
                                    Err(_) => ok = false,
                                }
                            }
                            ok.then_some(states)
                        }
                        _ => None,
                    }
                };
                (member, answer)
            }));
        }
        let mut merged = RangeStates::default();
        let mut answered = Vec::new();
        while let Some(joined) = pending.next().await {
            let Ok((member, Some(states))) = joined else {
                continue;
            };
            answered.push(member);
            merged.truncated |= states.truncated;
            for (clustering, parts) in states.rows {
                let row = merged.rows.entry(clustering).or_default();
                *row = join_parts(std::mem::take(row), &parts);
            }
            if answered.len() >= r {
                break;
            }
        }
        if answered.len() < r {
            return Err(inner.unavailable(r, n, answered.len(), &owners, &answered));
        }
        Ok(RangeRows::combine(value_type, merged, limit)?)
    }
}

/// Joins two per-epoch state lists (epoch by epoch).
fn join_parts(mine: Parts, theirs: &Parts) -> Parts {
    let mut by_epoch: BTreeMap<Epoch, Value> = mine.into_iter().collect();
    for (epoch, state) in theirs {
        match by_epoch.get_mut(epoch) {
            Some(existing) => {
                if existing.merge(state).is_err() {
                    tracing::warn!(
                        epoch = epoch.0,
                        "replicas hold different types for one key; keeping one"
                    );
                }
            }
            None => {
                by_epoch.insert(*epoch, state.clone());
            }
        }
    }
    by_epoch.into_iter().collect()
}

/// One owner's answer: the states of every key asked, in order.
type Answer = (usize, Vec<Parts>);

async fn fetch_states(
    inner: Arc<Inner>,
    member: usize,
    view: String,
    keys: Vec<Key>,
) -> Option<Answer> {
    if member == inner.me {
        return inner
            .store
            .states(&view, keys)
            .await
            .ok()
            .map(|s| (member, s));
    }
    let request = Request::States {
        view,
        keys: keys.iter().map(Key::encode).collect(),
    };
    match inner.call(member, &request).await {
        Ok(Response::States(states)) if states.len() == keys.len() => {
            let decoded: Result<Vec<Parts>, _> = states.iter().map(wire::decode_parts).collect();
            decoded.ok().map(|s| (member, s))
        }
        _ => None,
    }
}

/// Reads `keys` (all owned by `owners`) at `consistency`.
async fn read_group(
    inner: Arc<Inner>,
    view: String,
    owners: Vec<usize>,
    keys: Vec<Key>,
    consistency: Consistency,
) -> Result<Vec<Parts>, ClusterError> {
    let n = owners.len();
    let r = consistency.required(n);
    let live: Vec<usize> = owners.iter().copied().filter(|&m| inner.is_up(m)).collect();
    if live.len() < r {
        return Err(inner.unavailable(r, n, live.len(), &owners, &live));
    }
    let mut pending = FuturesUnordered::new();
    for &member in &live {
        pending.push(tokio::spawn(fetch_states(
            inner.clone(),
            member,
            view.clone(),
            keys.clone(),
        )));
    }
    let mut answers: Vec<Answer> = Vec::new();
    while let Some(joined) = pending.next().await {
        if let Ok(Some(answer)) = joined {
            answers.push(answer);
        }
        if answers.len() >= r && consistency != Consistency::All {
            break;
        }
    }
    if answers.len() < r {
        let answered: Vec<usize> = answers.iter().map(|(m, _)| *m).collect();
        return Err(inner.unavailable(r, n, answers.len(), &owners, &answered));
    }
    let merged = join_answers(&answers, keys.len());
    if consistency == Consistency::All {
        repair(&inner, &view, &keys, &answers, &merged).await;
    } else {
        // The owners that have not answered yet are compared (and repaired) in the
        // background, against the join of every answer.
        let keys = keys.clone();
        tokio::spawn(async move {
            while let Some(joined) = pending.next().await {
                if let Ok(Some(answer)) = joined {
                    answers.push(answer);
                }
            }
            let merged = join_answers(&answers, keys.len());
            repair(&inner, &view, &keys, &answers, &merged).await;
        });
    }
    Ok(merged)
}

fn join_answers(answers: &[Answer], count: usize) -> Vec<Parts> {
    let mut merged: Vec<Parts> = vec![Vec::new(); count];
    for (_, states) in answers {
        for (slot, parts) in merged.iter_mut().zip(states) {
            *slot = join_parts(std::mem::take(slot), parts);
        }
    }
    merged
}

/// Sends each answering owner the joined states it lacks.
async fn repair(inner: &Inner, view: &str, keys: &[Key], answers: &[Answer], merged: &[Parts]) {
    let repairs = answers.iter().filter_map(|(member, states)| {
        let mut stale = Deltas::default();
        for ((key, theirs), joined) in keys.iter().zip(states).zip(merged) {
            for (epoch, state) in joined {
                let same = theirs
                    .iter()
                    .find(|(e, _)| e == epoch)
                    .is_some_and(|(_, v)| v == state);
                if !same {
                    stale.push(*epoch, key.clone(), state.clone());
                }
            }
        }
        (!stale.is_empty()).then_some((*member, stale))
    });
    let sends = repairs.map(|(member, stale)| async move {
        let count = stale.local.len() as u64;
        if inner.merge_on(member, view, &stale, None).await {
            inner.metrics.read_repairs.inc_by(count);
            tracing::debug!(peer = %inner.name(member), keys = count, "read repair");
        }
    });
    futures_util::future::join_all(sends).await;
}
