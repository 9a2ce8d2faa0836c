//! A node joining or leaving while the cluster serves.
//!
//! The node that moves drives its own move, and flips its own record when it is done
//! ([`crate::gossip`]), which switches the ring on every node:
//! - **join**: the node announces itself `joining`; every coordinator that learns it
//!   sends it the writes of the partitions it will own (the next ring's new owners),
//!   while reads still go to the current owners. After [`SETTLE`] (every node has heard
//!   of it by then, and writes begun before have finished), it compares each of those
//!   partitions with their current owners through anti-entropy, which copies everything
//!   it lacks, then turns `up`.
//! - **leave** (`speedlayer ctl leave`): the node turns `leaving` (it still owns its
//!   partitions, and the next ring's new owners receive new writes), compares each
//!   partition it owns with the owners that gain it, then turns `left` and owns nothing.
//!   Leaves run one at a time, lowest address first: a partition of a node that turns
//!   `left` can fall to another node still `leaving`, which must hand it on as well.
//! - **remove** (`speedlayer ctl remove NODE`, for a dead node): its record turns
//!   `removed`; the partitions it owned get a new owner at once, which anti-entropy
//!   fills from the surviving replicas (a round starts as soon as the ring changes).
//!
//! Acknowledged writes are never lost: until the switch they are on the current owners
//! (and reads ask them); the node taking a partition over copies it from them after it
//! already receives every new write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use futures_util::StreamExt;

use crate::anti_entropy::{compare, ranked_pairs, Pacer, COMPARISONS_IN_FLIGHT};
use crate::error::ClusterError;
use crate::gossip::MemberState;
use crate::node::{Cluster, ClusterNode};

/// Wait between announcing a join (or leave) and copying: longer than gossip needs to
/// reach every node (a few ping intervals) plus one internode request timeout.
pub const SETTLE: Duration = Duration::from_secs(3);

/// Takes over this node's partitions, then turns it `up`.
pub(crate) async fn join(inner: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    // Someone must own data first: the seeds tell who.
    while inner.ring().members().is_empty() {
        tokio::select! {
            _ = inner.ring_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    tracing::info!(owners = ?inner.ring().members(), "joining: waiting for every node to hear of it");
    tokio::select! {
        _ = tokio::time::sleep(SETTLE) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let me = inner.members.me();
    let (ring, next) = (inner.ring(), inner.next_ring());
    let gained: Vec<u32> = (0..next.partitions())
        .filter(|&p| next.preference_list(p).contains(&me))
        .collect();
    let pairs = ranked_pairs(&gained, |p| ring.preference_list(p).to_vec(), |q| q != me);
    if move_partitions(&inner, &stop, "joining", pairs).await {
        let name = inner.members.name(me).to_string();
        inner.set_state(&name, None, MemberState::Up).await;
        tracing::info!(
            partitions = gained.len(),
            "joined: this node owns its partitions"
        );
    }
}

/// Hands this node's partitions to their next owners, then turns it `left`. The next
/// owners depend on every other node's state too (two nodes may leave at once), so the
/// gainers are worked out again after each pass until a pass finds none not yet done.
pub(crate) async fn leave(inner: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(SETTLE) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let me = inner.members.me();
    // One leave at a time, lowest address first: when a leaver turns `left`, its
    // partitions can fall to another node still `leaving`, which must then hand them on
    // too, so it may only begin once the earlier one is done.
    let my_name = inner.members.name(me).to_string();
    loop {
        let earlier: Vec<String> = inner
            .records()
            .into_values()
            .filter(|r| r.state == MemberState::Leaving && r.addr < my_name)
            .map(|r| r.addr)
            .collect();
        if earlier.is_empty() {
            break;
        }
        tracing::info!(
            ?earlier,
            "leaving: waiting for the nodes leaving before this one"
        );
        tokio::select! {
            _ = inner.ring_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    let mut done: std::collections::HashSet<(u32, usize)> = Default::default();
    loop {
        let ring = inner.ring();
        let held: Vec<u32> = (0..ring.partitions())
            .filter(|&p| ring.preference_list(p).contains(&me))
            .collect();
        let gainers = |p: u32| inner.pending_owners(&ring, p);
        let pairs: Vec<(u32, usize)> = ranked_pairs(&held, gainers, |q| q != me)
            .into_iter()
            .filter(|pair| !done.contains(pair))
            .collect();
        if pairs.is_empty() {
            break;
        }
        if !move_partitions(&inner, &stop, "leaving", pairs.clone()).await {
            return;
        }
        done.extend(pairs);
        // Let a concurrent change (another node leaving) reach this node first.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let name = inner.members.name(me).to_string();
    inner.set_state(&name, None, MemberState::Left).await;
    tracing::info!(
        handed_over = done.len(),
        "left: this node owns nothing now; handing on late writes"
    );
    // A coordinator that had not yet heard of the switch (or of an earlier leaver's)
    // may still have written here after the last comparison, and its write counted as
    // acknowledged. Once every node has heard of `left`, compare what this node held
    // once more with the partitions' owners, so such a write reaches them.
    tokio::select! {
        _ = tokio::time::sleep(SETTLE) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let ring = inner.ring();
    let mut held: Vec<u32> = done.iter().map(|&(partition, _)| partition).collect();
    held.sort_unstable();
    held.dedup();
    let pairs = ranked_pairs(&held, |p| ring.preference_list(p).to_vec(), |q| q != me);
    let last_pass = move_partitions(&inner, &stop, "left (late writes)", pairs);
    match tokio::time::timeout(LAST_PASS_LIMIT, last_pass).await {
        Ok(true) => tracing::info!("left: late writes handed on; this node may be stopped"),
        Ok(false) => {}
        Err(_) => tracing::warn!(
            "left: the last comparison with the owners did not finish in {LAST_PASS_LIMIT:?}; \
             this node may be stopped, but writes it took after its last pass may be missing \
             from the owners until anti-entropy or a read repairs them"
        ),
    }
}

/// Longest the comparison after turning `left` may take before the node gives up on it.
const LAST_PASS_LIMIT: Duration = Duration::from_secs(120);

/// Compares every (partition, peer) pair of `pending` (anti-entropy copies what differs
/// both ways), retrying failures until each pair is done. True when done; false when
/// stopped first.
async fn move_partitions(
    inner: &ClusterNode,
    stop: &watch::Receiver<bool>,
    what: &str,
    mut pending: Vec<(u32, usize)>,
) -> bool {
    let total = pending.len();
    let started = Instant::now();
    let pacer = Pacer::new(inner.config.anti_entropy.bytes_per_sec);
    let pacer = &pacer;
    let mut last_report = Instant::now();
    let (mut keys, mut bytes) = (0u64, 0u64);
    while !pending.is_empty() {
        if *stop.borrow() {
            return false;
        }
        let mut failed = Vec::new();
        let round = std::mem::take(&mut pending);
        let mut left = round.len();
        let mut outcomes = futures_util::stream::iter(round)
            .map(|(partition, peer)| async move {
                if !inner.members.is_up(peer) {
                    return (partition, peer, None);
                }
                (
                    partition,
                    peer,
                    Some(compare(inner, partition, peer, pacer).await),
                )
            })
            .buffer_unordered(COMPARISONS_IN_FLIGHT);
        while let Some((partition, peer, outcome)) = outcomes.next().await {
            left -= 1;
            match outcome {
                Some(Ok(stats)) => {
                    keys += stats.pulled + stats.pushed;
                    bytes += stats.bytes;
                }
                Some(Err(e)) => {
                    tracing::debug!(partition, peer = %inner.members.name(peer), error = %e, "{what}: comparison failed; retried");
                    failed.push((partition, peer));
                }
                None => failed.push((partition, peer)),
            }
            inner
                .metrics
                .transition_remaining
                .set((failed.len() + left) as i64);
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                tracing::info!(
                    done = total - failed.len() - left,
                    of = total,
                    keys,
                    bytes,
                    "{what}: moving partitions"
                );
            }
        }
        if !failed.is_empty() {
            // A peer down: try again shortly (its partitions wait for it).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        pending = failed;
    }
    inner.metrics.transition_remaining.set(0);
    tracing::info!(
        pairs = total,
        keys,
        bytes,
        took_ms = started.elapsed().as_millis() as u64,
        "{what}: every partition compared"
    );
    true
}

impl Cluster {
    /// Decommissions this node: it turns `leaving`, hands its partitions to their next
    /// owners, then turns `left`. Returns once the move has begun.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let me = inner.members.name(inner.members.me()).to_string();
        match inner.own_record().map(|r| r.state) {
            Some(MemberState::Up) => {}
            Some(MemberState::Leaving) => return Ok(()),
            other => {
                return Err(ClusterError::Request(speedlayer_api::Error::Membership(
                    format!(
                        "this node is {}: only a node that is up can leave",
                        other.map_or("not a member", MemberState::as_str)
                    ),
                )))
            }
        }
        let others = inner.ring().members().iter().filter(|m| **m != me).count();
        if others == 0 {
            return Err(ClusterError::Request(speedlayer_api::Error::Membership(
                "this node is the only one owning data: nobody could take its partitions".into(),
            )));
        }
        inner.set_state(&me, None, MemberState::Leaving).await;
        tokio::spawn(leave(inner.clone(), inner.stop.clone()));
        Ok(())
    }

    /// Takes a dead node (cluster address `addr`) out of the ring; its partitions are
    /// rebuilt on their new owners from the surviving replicas. Refused for a node the
    /// failure detector sees up (it should `leave` instead) and for this node.
    pub async fn remove_node(&self, addr: &str) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let Some(record) = inner.records().get(addr).cloned() else {
            return Err(ClusterError::Request(speedlayer_api::Error::UnknownMember(
                addr.to_owned(),
            )));
        };
        let member = inner.members.member_named(addr);
        if member == Some(inner.members.me()) {
            return Err(ClusterError::Request(speedlayer_api::Error::Membership(
                "a node cannot remove itself: use `speedlayer ctl leave`".into(),
            )));
        }
        if member.is_some_and(|m| inner.members.is_up(m)) {
            return Err(ClusterError::Request(speedlayer_api::Error::Membership(format!(
                "{addr} is up: a live node leaves with `speedlayer ctl leave` on it, which hands its data over"
            ))));
        }
        if record.state == MemberState::Removed {
            return Ok(());
        }
        inner
            .set_state(addr, Some(&record.node_id), MemberState::Removed)
            .await;
        Ok(())
    }
}
