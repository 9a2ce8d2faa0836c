//! Cardinality reads (`SCARD`): the owners' set summaries compared, the members read
//! only when they must be joined.
//!
//! Each owner answers a [`RowSummary`] per key: per live epoch, the set's member count
//! and state digest, which its owner shard keeps up to date as the set changes, so the
//! answer costs O(1) however large the set. When the R owners a read waits for agree
//! ([`RowSummary::agreed`]: equal digests, one part, no batch row), their count is the
//! answer, and no member crosses the network or is copied out of a shard. Otherwise
//! (owners that differ, a key in several epochs, a batch row, owners that cannot
//! summarize, such as an older release) the keys are read whole: that read joins the
//! owners' states and repairs the stale ones, as every read does.

use std::sync::Arc;

use speedlayer_api::Consistency;
use speedlayer_core::{BatchBoundary, Cardinality, Key, Reading, RowSummary, Value};

use crate::error::ClusterError;
use crate::metrics::AnswerLabel;
use crate::node::{Cluster, ClusterNode};
use crate::read::{gather, Fetched, Gathered, ReadAtError};
use crate::wire::{Request, Response};

impl Cluster {
    /// The member count of each of `keys` in `view` at `consistency`, in order: from the
    /// owners' summaries when they agree, else from a whole read of the keys.
    pub async fn set_cardinality(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<Vec<Cardinality>, ClusterError> {
        let settled = if self.is_single() || consistency == Consistency::Local {
            let (_, rows) = self
                .inner
                .store
                .set_summaries(view, keys.clone(), None)
                .await?;
            rows.iter().map(|row| RowSummary::agreed([row])).collect()
        } else {
            match self
                .at_current_boundary(view, |at| self.summaries_at(view, &keys, consistency, at))
                .await
            {
                Ok((_, settled)) => settled,
                Err(e) => {
                    // The whole read below asks again and reports what still fails.
                    tracing::debug!(error = %e, "set summaries unavailable; reading members");
                    vec![None; keys.len()]
                }
            }
        };
        let summarized = settled.iter().filter(|s| s.is_some()).count() as u64;
        let metric = |answer| {
            self.inner
                .metrics
                .cardinality_reads
                .get_or_create(&AnswerLabel { answer })
        };
        metric("summary").inc_by(summarized);
        metric("members").inc_by(keys.len() as u64 - summarized);
        let unsettled: Vec<Key> = keys
            .iter()
            .zip(&settled)
            .filter(|(_, settled)| settled.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let mut read = if unsettled.is_empty() {
            Vec::new()
        } else {
            self.whole_read_cardinality(view, unsettled, consistency)
                .await?
        }
        .into_iter();
        Ok(settled
            .into_iter()
            .map(|settled| {
                settled
                    .or_else(|| read.next())
                    .unwrap_or(Cardinality::Members(0))
            })
            .collect())
    }

    /// Cardinalities from the joined states of `keys`: what owners that disagree need.
    async fn whole_read_cardinality(
        &self,
        view: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<Vec<Cardinality>, ClusterError> {
        let value_type = self.inner.store.view(view)?.spec.value_type.typed();
        let answers = self.read(view, keys, consistency).await?;
        Ok(answers
            .rows
            .iter()
            .map(|parts| match parts.reading(value_type) {
                Ok(None) => Cardinality::Members(0),
                Ok(Some(Reading::State(Value::Set(set)))) => Cardinality::Members(set.len() as u64),
                // Another type, or parts of several types.
                Ok(Some(_)) | Err(_) => Cardinality::WrongType,
            })
            .collect())
    }

    /// Each key's cardinality if the owners' summaries at boundary `at` settle it.
    async fn summaries_at(
        &self,
        view: &str,
        keys: &[Key],
        consistency: Consistency,
        at: BatchBoundary,
    ) -> Result<Vec<Option<Cardinality>>, ReadAtError> {
        let inner = &self.inner;
        let ring = inner.ring();
        let groups = ring.group(keys.to_vec(), |k| &k.partition);
        let reads = groups.into_iter().map(|(partition, items)| {
            let owners = ring.preference_list(partition).to_vec();
            let inner = self.inner.clone();
            let view = view.to_owned();
            async move {
                let (indexes, keys): (Vec<usize>, Vec<Key>) = items.into_iter().unzip();
                let keys = Arc::new(keys);
                let Gathered { mut answers, .. } =
                    gather(&inner, &owners, consistency, at, |member| {
                        fetch_summaries(inner.clone(), member, view.clone(), keys.clone(), at)
                    })
                    .await?;
                if let Some(dropped) = inner.store.dropped(&view) {
                    for (_, rows) in &mut answers {
                        for row in rows.iter_mut() {
                            row.epochs.retain(|(epoch, _)| !dropped.contains(epoch));
                        }
                    }
                }
                let settled = (0..keys.len()).map(|i| {
                    RowSummary::agreed(answers.iter().filter_map(|(_, rows)| rows.get(i)))
                });
                Ok::<_, ReadAtError>(indexes.into_iter().zip(settled).collect::<Vec<_>>())
            }
        });
        let mut settled = vec![None; keys.len()];
        for group in futures_util::future::join_all(reads).await {
            for (index, cardinality) in group? {
                settled[index] = cardinality;
            }
        }
        Ok(settled)
    }
}

/// One owner's summaries of `keys` at `at`.
async fn fetch_summaries(
    inner: Arc<ClusterNode>,
    member: usize,
    view: String,
    keys: Arc<Vec<Key>>,
    at: BatchBoundary,
) -> Fetched<Vec<RowSummary>> {
    if member == inner.members.me() {
        let answer = inner
            .store
            .set_summaries(&view, keys.to_vec(), Some(at))
            .await;
        return Fetched::local(member, answer.map(|(_, rows)| rows));
    }
    let request = Request::SetSummaries {
        view: view.clone(),
        keys: keys.iter().map(Key::encode).collect(),
        at: at.0,
    };
    let answer = inner.members.call(member, &request).await;
    if let Ok(Response::Summaries { dropped, .. }) = &answer {
        inner.heed_dropped(&view, dropped).await;
    }
    Fetched::remote(member, answer, |response| match response {
        Response::Summaries { rows, .. } if rows.len() == keys.len() => Some(rows),
        _ => None,
    })
}
