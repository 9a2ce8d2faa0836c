//! The read path: ask the owners, merge what R of them answer, repair the stale ones.
//!
//! Every read happens at one batch boundary T, the coordinator's current one: replicas
//! answer `batch(T)` rows and realtime states of epochs ≥ T, or that they cannot read at
//! T (see `speedlayer_store::batch`), so no answer mixes two boundaries.
//!
//! Replicas answer with each key's state **per epoch**; the coordinator joins them epoch
//! by epoch (replicas of one epoch are CRDT states: join is the merge) and only then
//! combines epochs into a reading (epochs are disjoint parts: counters add). A replica
//! whose state differs from the join is stale and gets the join (read repair): before
//! the answer at `all`, in the background otherwise (once the remaining owners have
//! answered too).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use speedlayer_api::{KeyAnswers, RangeQuery, RangeRows};
use speedlayer_core::{BatchBoundary, Epoch, Key, RowParts};
use speedlayer_store::{RangeStates, StoreError};

use crate::catalog_sync;
use crate::error::ClusterError;
use crate::node::{Cluster, ClusterNode, Deltas};
use crate::wire::{self, Request, Response};
use speedlayer_api::Consistency;

/// What one owner answered.
pub(crate) enum Fetched<T> {
    /// Its parts.
    Parts(usize, T),
    /// It cannot read at the boundary asked: it knows a newer one (this coordinator is
    /// behind), or has not staged it.
    Behind(usize, BatchBoundary),
    /// No usable answer.
    Failed,
}

impl<T> Fetched<T> {
    /// This node's own answer.
    pub(crate) fn local(member: usize, answer: Result<T, StoreError>) -> Fetched<T> {
        match answer {
            Ok(parts) => Fetched::Parts(member, parts),
            Err(StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                current,
                ..
            })) => Fetched::Behind(member, current),
            Err(_) => Fetched::Failed,
        }
    }

    /// A peer's answer, its parts decoded by `decode` (`None`: not the expected answer).
    pub(crate) fn remote(
        member: usize,
        answer: Result<Response, crate::peer::RpcError>,
        decode: impl FnOnce(Response) -> Option<T>,
    ) -> Fetched<T> {
        match answer {
            Ok(Response::BoundaryUnavailable { current }) => {
                Fetched::Behind(member, BatchBoundary(current))
            }
            Ok(response) => decode(response).map_or(Fetched::Failed, |p| Fetched::Parts(member, p)),
            Err(_) => Fetched::Failed,
        }
    }
}

/// One range read's question at boundary `at`, as every owner is asked it.
fn range_request(query: &RangeQuery, at: BatchBoundary) -> Request {
    Request::Range {
        view: query.view.clone(),
        partition: query.partition.clone(),
        from: query.from.clone(),
        to: query.to.clone(),
        limit: query.limit as u64,
        at: at.0,
    }
}

/// Why a read at one boundary did not complete.
pub(crate) enum ReadAtError {
    /// Too few owners could read at the boundary, and `member` knows a newer one.
    Behind(usize),
    /// Anything else.
    Failed(ClusterError),
}

impl From<ClusterError> for ReadAtError {
    fn from(e: ClusterError) -> Self {
        ReadAtError::Failed(e)
    }
}

impl Cluster {
    /// The parts of `keys` in `view` at `consistency`, all at one batch boundary: the
    /// coordinator's current one. Owners that cannot read at it are not counted; when
    /// too few can because this coordinator is behind, it learns the newer boundary from
    /// one of them and reads again.
    pub async fn read(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, ClusterError> {
        self.read_restricted(view, keys, None, consistency).await
    }

    /// [`Cluster::read`] with set states restricted to `members` (a membership test):
    /// each owner answers its restriction, and their join is the restriction of the
    /// join, so the answer is what the whole read would say about those members, at a
    /// cost independent of the set's size. Read repair joins the restricted answer into
    /// owners that lack part of it, which is safe (it is a sub-state of the join).
    pub async fn read_members(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, ClusterError> {
        let members: Arc<[Vec<u8>]> = Arc::from(members);
        self.read_restricted(view, keys, Some(members), consistency)
            .await
    }

    async fn read_restricted(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Option<Arc<[Vec<u8>]>>,
        consistency: Consistency,
    ) -> Result<KeyAnswers, ClusterError> {
        let inner = &self.inner;
        if self.is_single() || consistency == Consistency::Local {
            let (boundary, rows) = inner
                .store
                .states_restricted(view, keys, members, None)
                .await?;
            return Ok(KeyAnswers { boundary, rows });
        }
        let (boundary, rows) = self
            .at_current_boundary(view, |at| {
                self.read_at(view, keys.clone(), members.clone(), consistency, at)
            })
            .await?;
        Ok(KeyAnswers { boundary, rows })
    }

    /// Runs `read` at this coordinator's current boundary of `view`; when too few owners
    /// could read at it because this node is behind, learns the newer boundary from one
    /// that knows it (catalog gossip, at once) and reads once more.
    pub(crate) async fn at_current_boundary<T, F, Fut>(
        &self,
        view: &str,
        read: F,
    ) -> Result<(BatchBoundary, T), ClusterError>
    where
        F: Fn(BatchBoundary) -> Fut,
        Fut: std::future::Future<Output = Result<T, ReadAtError>>,
    {
        let inner = &self.inner;
        let mut attempt = 0;
        loop {
            let at = inner.read_boundary(view)?;
            match read(at).await {
                Ok(answer) => return Ok((at, answer)),
                Err(ReadAtError::Behind(member)) if attempt == 0 => {
                    attempt += 1;
                    catalog_sync::pull(inner, member).await;
                }
                Err(ReadAtError::Behind(_)) => {
                    return Err(
                        StoreError::Request(speedlayer_api::Error::BoundaryUnavailable {
                            view: view.to_owned(),
                            asked: at,
                            current: at,
                        })
                        .into(),
                    )
                }
                Err(ReadAtError::Failed(e)) => return Err(e),
            }
        }
    }

    async fn read_at(
        &self,
        view: &str,
        keys: Vec<Key>,
        members: Option<Arc<[Vec<u8>]>>,
        consistency: Consistency,
        at: BatchBoundary,
    ) -> Result<Vec<RowParts>, ReadAtError> {
        let inner = &self.inner;
        let count = keys.len();
        let groups = inner.ring().group(keys, |k| &k.partition);
        let reads = groups.into_iter().map(|(partition, items)| {
            let owners = inner.ring().preference_list(partition).to_vec();
            let inner = self.inner.clone();
            let view = view.to_owned();
            let members = members.clone();
            async move {
                let (indexes, keys): (Vec<usize>, Vec<Key>) = items.into_iter().unzip();
                let scope = Scope { keys, members };
                let parts = read_group(inner, view, owners, scope, consistency, at).await?;
                Ok::<_, ReadAtError>(indexes.into_iter().zip(parts).collect::<Vec<_>>())
            }
        });
        let mut rows: Vec<RowParts> = (0..count).map(|_| RowParts::default()).collect();
        for group in futures_util::future::join_all(reads).await {
            for (index, parts) in group? {
                rows[index] = parts;
            }
        }
        Ok(rows)
    }

    /// Rows of one partition at `consistency` (see [`speedlayer_store::Store::range`]):
    /// the owners' rows joined per (row, epoch), then combined, at one batch boundary
    /// (chosen as [`Cluster::read`] does). Not read-repaired.
    pub async fn range(
        &self,
        query: RangeQuery,
        consistency: Consistency,
    ) -> Result<RangeRows, ClusterError> {
        let inner = &self.inner;
        let RangeQuery {
            view,
            partition,
            from,
            to,
            limit,
        } = &query;
        if self.is_single() || consistency == Consistency::Local {
            return Ok(inner
                .store
                .range(view, partition.clone(), from.clone(), to.clone(), *limit)
                .await?);
        }
        let value_type = inner.store.view(view)?.spec.value_type;
        let (_, merged) = self
            .at_current_boundary(view, |at| self.range_at(&query, consistency, at))
            .await?;
        Ok(merged.combine(value_type, *limit)?)
    }

    async fn range_at(
        &self,
        query: &RangeQuery,
        consistency: Consistency,
        at: BatchBoundary,
    ) -> Result<RangeStates, ReadAtError> {
        let inner = &self.inner;
        let ring = inner.ring();
        let owners = ring
            .preference_list(ring.partition_of(&query.partition))
            .to_vec();
        let n = owners.len();
        let r = consistency.required(n);
        let request = range_request(query, at);
        let mut pending = FuturesUnordered::new();
        for &member in owners.iter().filter(|&&m| inner.members.is_up(m)) {
            let (inner, query, request) = (self.inner.clone(), query.clone(), request.clone());
            pending.push(tokio::spawn(async move {
                if member == inner.members.me() {
                    let q = query;
                    let answer = inner
                        .store
                        .range_states(&q.view, q.partition, q.from, q.to, q.limit, Some(at))
                        .await;
                    return Fetched::local(member, answer);
                }
                let answer = inner.members.call(member, &request).await;
                if let Ok(Response::Range { dropped, .. }) = &answer {
                    inner.heed_dropped(&query.view, dropped).await;
                }
                Fetched::remote(member, answer, |response| {
                    let Response::Range {
                        rows, truncated, ..
                    } = response
                    else {
                        return None;
                    };
                    let mut states = RangeStates {
                        truncated,
                        boundary: at,
                        ..RangeStates::default()
                    };
                    for (clustering, row) in rows {
                        states.rows.insert(clustering, wire::decode_row(&row).ok()?);
                    }
                    Some(states)
                })
            }));
        }
        let mut merged = RangeStates {
            boundary: at,
            ..RangeStates::default()
        };
        let mut answered = Vec::new();
        let mut ahead = None;
        while let Some(joined) = pending.next().await {
            match joined {
                Ok(Fetched::Parts(member, states)) => {
                    answered.push(member);
                    merged.truncated |= states.truncated;
                    for (clustering, parts) in states.rows {
                        join_row(merged.rows.entry(clustering).or_default(), &parts);
                    }
                }
                Ok(Fetched::Behind(member, current)) if current > at => ahead = Some(member),
                _ => {}
            }
            if answered.len() >= r {
                break;
            }
        }
        if answered.len() < r {
            if let Some(member) = ahead {
                return Err(ReadAtError::Behind(member));
            }
            return Err(inner
                .unavailable(r, n, answered.len(), &owners, &answered)
                .into());
        }
        if let Some(dropped) = inner.store.dropped(&query.view) {
            for parts in merged.rows.values_mut() {
                without_dropped(parts, &dropped);
            }
            merged
                .rows
                .retain(|_, parts| parts.batch.is_some() || !parts.epochs.is_empty());
        }
        Ok(merged)
    }
}

/// Removes from `parts` the states of epochs dropped cluster-wide: a replica that had not
/// heard of the drop when it answered may still hold them.
pub(crate) fn without_dropped(parts: &mut RowParts, dropped: &BTreeSet<Epoch>) {
    parts.epochs.retain(|(epoch, _)| !dropped.contains(epoch));
}

/// Joins another replica's parts of a row into `mine`.
fn join_row(mine: &mut RowParts, theirs: &RowParts) {
    if mine.join(theirs).is_err() {
        tracing::warn!("replicas hold different types for one key; keeping one");
    }
}

/// One owner's answer: the parts of every key asked, in order.
type Answer = (usize, Vec<RowParts>);

/// What a point read asks each owner: keys, and for a membership test the members.
struct Scope {
    keys: Vec<Key>,
    members: Option<Arc<[Vec<u8>]>>,
}

async fn fetch_states(
    inner: Arc<ClusterNode>,
    member: usize,
    view: String,
    scope: Scope,
    at: BatchBoundary,
) -> Fetched<Vec<RowParts>> {
    let Scope { keys, members } = scope;
    if member == inner.members.me() {
        let answer = inner
            .store
            .states_restricted(&view, keys, members, Some(at))
            .await;
        return Fetched::local(member, answer.map(|(_, rows)| rows));
    }
    let encoded = keys.iter().map(Key::encode).collect();
    let request = match members {
        None => Request::States {
            view: view.clone(),
            keys: encoded,
            at: at.0,
        },
        Some(members) => Request::MemberStates {
            view: view.clone(),
            keys: encoded,
            at: at.0,
            members: members.to_vec(),
        },
    };
    let answer = inner.members.call(member, &request).await;
    if let Ok(Response::States { dropped, .. }) = &answer {
        inner.heed_dropped(&view, dropped).await;
    }
    Fetched::remote(member, answer, |response| match response {
        Response::States { rows, .. } if rows.len() == keys.len() => rows
            .iter()
            .map(wire::decode_row)
            .collect::<Result<_, _>>()
            .ok(),
        _ => None,
    })
}

/// The answers a read waits for, and the owners still to answer (compared in the
/// background for read repair).
pub(crate) struct Gathered<T> {
    /// (owner, answer) of the owners that answered, at least R of them.
    pub answers: Vec<(usize, T)>,
    /// The owners not waited for.
    pub pending: FuturesUnordered<tokio::task::JoinHandle<Fetched<T>>>,
}

/// Asks every live owner (`fetch`) and waits for R answers at `consistency` (all of them
/// at `all`). Fails as unavailable when fewer than R answer, or as behind when one of
/// the others knows a newer boundary than `at`.
pub(crate) async fn gather<T, Fut>(
    inner: &ClusterNode,
    owners: &[usize],
    consistency: Consistency,
    at: BatchBoundary,
    fetch: impl Fn(usize) -> Fut,
) -> Result<Gathered<T>, ReadAtError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Fetched<T>> + Send + 'static,
{
    let n = owners.len();
    let r = consistency.required(n);
    let live: Vec<usize> = owners
        .iter()
        .copied()
        .filter(|&m| inner.members.is_up(m))
        .collect();
    if live.len() < r {
        return Err(inner.unavailable(r, n, live.len(), owners, &live).into());
    }
    let mut pending = FuturesUnordered::new();
    for &member in &live {
        pending.push(tokio::spawn(fetch(member)));
    }
    let mut answers = Vec::new();
    let mut ahead = None;
    while let Some(joined) = pending.next().await {
        match joined {
            Ok(Fetched::Parts(member, rows)) => answers.push((member, rows)),
            Ok(Fetched::Behind(member, current)) if current > at => ahead = Some(member),
            _ => {}
        }
        if answers.len() >= r && consistency != Consistency::All {
            break;
        }
    }
    if answers.len() < r {
        if let Some(member) = ahead {
            return Err(ReadAtError::Behind(member));
        }
        let answered: Vec<usize> = answers.iter().map(|(m, _)| *m).collect();
        return Err(inner
            .unavailable(r, n, answers.len(), owners, &answered)
            .into());
    }
    Ok(Gathered { answers, pending })
}

/// Reads `keys` (all owned by `owners`) at `consistency` and boundary `at`.
async fn read_group(
    inner: Arc<ClusterNode>,
    view: String,
    owners: Vec<usize>,
    scope: Scope,
    consistency: Consistency,
    at: BatchBoundary,
) -> Result<Vec<RowParts>, ReadAtError> {
    let Scope { keys, members } = scope;
    let Gathered {
        mut answers,
        mut pending,
    } = gather(&inner, &owners, consistency, at, |member| {
        fetch_states(
            inner.clone(),
            member,
            view.clone(),
            Scope {
                keys: keys.clone(),
                members: members.clone(),
            },
            at,
        )
    })
    .await?;
    if let Some(dropped) = inner.store.dropped(&view) {
        for (_, rows) in &mut answers {
            for parts in rows.iter_mut() {
                without_dropped(parts, &dropped);
            }
        }
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
                if let Ok(Fetched::Parts(member, rows)) = joined {
                    answers.push((member, rows));
                }
            }
            let merged = join_answers(&answers, keys.len());
            repair(&inner, &view, &keys, &answers, &merged).await;
        });
    }
    Ok(merged)
}

fn join_answers(answers: &[Answer], count: usize) -> Vec<RowParts> {
    let mut merged: Vec<RowParts> = vec![RowParts::default(); count];
    for (_, rows) in answers {
        for (slot, parts) in merged.iter_mut().zip(rows) {
            join_row(slot, parts);
        }
    }
    merged
}

/// Sends each answering owner the joined realtime states it lacks (batch rows are the
/// same on every owner: one import staged them all).
async fn repair(
    inner: &ClusterNode,
    view: &str,
    keys: &[Key],
    answers: &[Answer],
    merged: &[RowParts],
) {
    let repairs = answers.iter().filter_map(|(member, rows)| {
        let mut stale = Deltas::default();
        for ((key, theirs), joined) in keys.iter().zip(rows).zip(merged) {
            for (epoch, state) in &joined.epochs {
                let same = theirs
                    .epochs
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
            tracing::debug!(peer = %inner.members.name(member), keys = count, "read repair");
        }
    });
    futures_util::future::join_all(sends).await;
}
