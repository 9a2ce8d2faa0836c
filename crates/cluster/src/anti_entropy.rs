//! Anti-entropy: replicas of a partition compare digests of their data and exchange
//! only what differs, so a replica that missed writes converges even when nobody reads
//! the keys and no hint reaches it (hints lost with a disk, handoff turned off, a node
//! restarted with an empty data directory).
//!
//! How: every [`crate::node::AntiEntropyConfig::interval`], for each partition it owns, a
//! node compares with each other owner whose cluster address sorts after its own (so
//! every pair of replicas is compared once per round, by the first of the two). A
//! comparison narrows a difference down in three steps, each a small request: the
//! range's root digest per live (view, epoch) ([`speedlayer_store::Store::range_digests`],
//! which checkpoints first when its last checkpoint is over a second old, and caches a
//! digest until a checkpoint changes the range, so an unchanged partition costs one
//! round trip), then its [`LEAVES`] leaf
//! digests, then the (key, state hash) entries of the differing leaves. The keys whose
//! hashes differ are pulled (merged here) and pushed (merged there); merges are joins,
//! so both replicas end with the join of the two, and re-sending a state changes nothing.
//!
//! What it never does: compare or send an epoch before either side's batch boundary, or
//! one dropped cluster-wide (the store leaves those out of its digests, and
//! [`speedlayer_store::Store::merge_live`] refuses them on the receiving side), so it
//! cannot bring back what a hand-over retired or a drop removed. States moved are paced
//! to [`crate::node::AntiEntropyConfig::bytes_per_sec`] so foreground requests keep
//! their latency.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use speedlayer_core::Epoch;
use speedlayer_store::digest::{leaf_range, LEAVES};
use speedlayer_store::Store;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::metrics::ClusterMetrics;
use crate::node::ClusterNode;
use crate::peer::RpcError;
use crate::wire::{self, AntiEntropyRequest, AntiEntropyResponse, Request, Response, WireState};

/// Keys per states request: keeps each call well under the RPC timeout.
const KEYS_PER_CALL: usize = 1024;
/// Partition comparisons in flight at once: each waits on round trips and on the
/// receiving side's journal sync, so a few at once keep both busy.
pub(crate) const COMPARISONS_IN_FLIGHT: usize = 4;
/// Delay before the first round, so the failure detector has seen the peers.
const FIRST_ROUND_DELAY: Duration = Duration::from_secs(2);

/// What one round (or one comparison) did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundStats {
    /// (partition, peer) comparisons made.
    pub compared: u64,
    /// (partition, peer, view, epoch) digests that differed.
    pub differing: u64,
    /// Key states pulled from peers and merged here.
    pub pulled: u64,
    /// Key states pushed to peers and merged there.
    pub pushed: u64,
    /// Bytes of states moved.
    pub bytes: u64,
    /// Comparisons that failed (peer unreachable, store error); retried next round.
    pub failed: u64,
}

impl RoundStats {
    fn add(&mut self, other: RoundStats) {
        self.compared += other.compared;
        self.differing += other.differing;
        self.pulled += other.pulled;
        self.pushed += other.pushed;
        self.bytes += other.bytes;
        self.failed += other.failed;
    }
}

/// Runs rounds until `stop` turns true.
pub(crate) async fn run(inner: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    let Some(interval) = inner.config.anti_entropy.interval else {
        return;
    };
    let mut next = tokio::time::Instant::now() + FIRST_ROUND_DELAY;
    loop {
        let woken = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            // A new owner must be filled now, not at the next round.
            _ = inner.ring_changed.notified() => true,
            _ = stop.wait_for(|s| *s) => return,
        };
        if woken {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        next = tokio::time::Instant::now() + interval;
        let started = Instant::now();
        let stats = round(&inner, &stop).await;
        let took = started.elapsed();
        note_round(&inner.metrics, &stats, took);
        if stats.differing > 0 || stats.failed > 0 {
            tracing::info!(
                compared = stats.compared,
                differing = stats.differing,
                pulled = stats.pulled,
                pushed = stats.pushed,
                bytes = stats.bytes,
                failed = stats.failed,
                took_ms = took.as_millis() as u64,
                "anti-entropy round"
            );
        }
    }
}

/// The (partition, peer) pairs to compare: each of `partitions` with each peer of
/// `peers_of` that `keep` accepts, every partition with its first peer, then with its
/// second, and so on. A partition's comparisons thus run far apart, so the later ones
/// see digests that include what the earlier one copied instead of copying it again.
pub(crate) fn ranked_pairs(
    partitions: &[u32],
    peers_of: impl Fn(u32) -> Vec<usize>,
    keep: impl Fn(usize) -> bool,
) -> Vec<(u32, usize)> {
    let mut ranked: Vec<(usize, u32, usize)> = partitions
        .iter()
        .flat_map(|&p| {
            peers_of(p)
                .into_iter()
                .filter(|&q| keep(q))
                .enumerate()
                .map(move |(rank, q)| (rank, p, q))
        })
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, p, q)| (p, q)).collect()
}

/// Records a finished round in the metrics.
fn note_round(metrics: &ClusterMetrics, stats: &RoundStats, took: Duration) {
    metrics.anti_entropy_rounds.inc();
    metrics.anti_entropy_pulled.inc_by(stats.pulled);
    metrics.anti_entropy_pushed.inc_by(stats.pushed);
    metrics.anti_entropy_bytes.inc_by(stats.bytes);
    metrics.anti_entropy_differing.set(stats.differing as i64);
    metrics.anti_entropy_failed.set(stats.failed as i64);
    metrics.anti_entropy_round_seconds.set(took.as_secs_f64());
    let now = speedlayer_store::clock::wall_clock_us() / 1_000_000;
    metrics.anti_entropy_last_round.set(now as i64);
}

/// One round over every partition this node owns.
pub(crate) async fn round(inner: &ClusterNode, stop: &watch::Receiver<bool>) -> RoundStats {
    let mut stats = RoundStats::default();
    let me = inner.members.me();
    let my_name = inner.members.name(me);
    let pacer = Pacer::new(inner.config.anti_entropy.bytes_per_sec);
    let ring = inner.ring();
    let owned: Vec<u32> = (0..ring.partitions())
        .filter(|&p| ring.preference_list(p).contains(&me))
        .collect();
    let pairs = ranked_pairs(
        &owned,
        |p| ring.preference_list(p).to_vec(),
        |peer| peer != me && inner.members.name(peer) > my_name && inner.members.is_up(peer),
    );
    let pacer = &pacer;
    let mut outcomes = futures_util::stream::iter(pairs)
        .map(|(partition, peer)| async move {
            if *stop.borrow() {
                return None;
            }
            Some((
                partition,
                peer,
                compare(inner, partition, peer, pacer).await,
            ))
        })
        .buffer_unordered(COMPARISONS_IN_FLIGHT);
    while let Some(outcome) = outcomes.next().await {
        let Some((partition, peer, result)) = outcome else {
            continue;
        };
        stats.compared += 1;
        match result {
            Ok(found) => stats.add(found),
            Err(e) => {
                stats.failed += 1;
                tracing::debug!(partition, peer = %inner.members.name(peer), error = %e, "anti-entropy comparison failed; retried next round");
            }
        }
    }
    stats
}

/// Keeps the states moved under a rate, shared by the comparisons in flight: a
/// comparison sleeps once the bytes moved so far run ahead of it.
pub(crate) struct Pacer {
    bytes_per_sec: u64,
    started: Instant,
    bytes: std::sync::atomic::AtomicU64,
}

impl Pacer {
    pub(crate) fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            started: Instant::now(),
            bytes: Default::default(),
        }
    }

    async fn moved(&self, bytes: u64) {
        let total = self
            .bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            + bytes;
        let due = Duration::from_secs_f64(total as f64 / self.bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
    }
}

/// Calls `peer` with an anti-entropy request.
async fn ask(
    inner: &ClusterNode,
    peer: usize,
    request: AntiEntropyRequest,
) -> Result<AntiEntropyResponse, ClusterError> {
    let (response, bytes) = inner
        .members
        .call_sized(peer, &Request::AntiEntropy(request))
        .await?;
    inner.metrics.anti_entropy_wire_bytes.inc_by(bytes);
    match response {
        Response::AntiEntropy(answer) => Ok(answer),
        other => Err(RpcError::Protocol {
            peer: inner.members.name(peer).to_string(),
            reason: format!("answered anti-entropy with {other:?}"),
        }
        .into()),
    }
}

fn unexpected(inner: &ClusterNode, peer: usize, answer: &AntiEntropyResponse) -> ClusterError {
    RpcError::Protocol {
        peer: inner.members.name(peer).to_string(),
        reason: format!("unexpected anti-entropy answer {answer:?}"),
    }
    .into()
}

/// Compares `partition` with `peer` and exchanges what differs.
pub(crate) async fn compare(
    inner: &ClusterNode,
    partition: u32,
    peer: usize,
    pacer: &Pacer,
) -> Result<RoundStats, ClusterError> {
    let (first, last) = inner.ring().hash_range(partition);
    let mine = inner.store.range_digests(first, last).await?;
    let (theirs, their_floors) =
        match ask(inner, peer, AntiEntropyRequest::Digests { first, last }).await? {
            AntiEntropyResponse::Digests { epochs, floors } => (epochs, floors),
            other => return Err(unexpected(inner, peer, &other)),
        };
    let their_floors: HashMap<String, u64> = their_floors.into_iter().collect();
    // (view, epoch) → [mine, theirs].
    let mut both: BTreeMap<(String, u64), [Option<Summary>; 2]> = BTreeMap::new();
    for d in mine.epochs {
        both.entry((d.view, d.epoch.0)).or_default()[0] = Some((d.digest.keys, d.digest.root));
    }
    for (view, epoch, keys, root) in theirs {
        both.entry((view, epoch)).or_default()[1] = Some((keys, root));
    }
    let my_floors: HashMap<String, Epoch> = mine.floors.into_iter().collect();
    let mut stats = RoundStats::default();
    for ((view, epoch), [ours, theirs]) in both {
        if ours == theirs {
            continue;
        }
        // A view one side does not know yet: catalog gossip comes first.
        let (Some(my_floor), Some(&their_floor)) = (my_floors.get(&view), their_floors.get(&view))
        else {
            continue;
        };
        if epoch < my_floor.0.max(their_floor) {
            continue;
        }
        stats.differing += 1;
        let side = Side {
            inner,
            peer,
            view: &view,
            epoch: Epoch(epoch),
        };
        let ranges = if ours.is_some() && theirs.is_some() {
            side.differing_leaves(first, last).await?
        } else {
            vec![(first, last)]
        };
        for (lo, hi) in ranges {
            stats.add(
                side.exchange(lo, hi, ours.is_some(), theirs.is_some(), pacer)
                    .await?,
            );
        }
    }
    Ok(stats)
}

/// A range's digest in one (view, epoch) as compared: (keys, root).
type Summary = (u64, [u8; 16]);

/// One (view, epoch) being compared with one peer.
struct Side<'a> {
    inner: &'a ClusterNode,
    peer: usize,
    view: &'a str,
    epoch: Epoch,
}

impl Side<'_> {
    /// The leaf sub-ranges of `first..=last` whose digests differ.
    async fn differing_leaves(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<(u64, u64)>, ClusterError> {
        let store = &self.inner.store;
        let mine = store
            .range_leaves(self.view, self.epoch, first, last)
            .await?;
        let request = AntiEntropyRequest::Leaves {
            view: self.view.to_owned(),
            epoch: self.epoch.0,
            first,
            last,
        };
        let theirs = match ask(self.inner, self.peer, request).await? {
            AntiEntropyResponse::Leaves(leaves) => leaves,
            other => return Err(unexpected(self.inner, self.peer, &other)),
        };
        Ok((0..LEAVES)
            .filter(|&i| mine.get(i) != theirs.get(i))
            .map(|i| leaf_range(first, last, i))
            .filter(|(lo, hi)| lo <= hi)
            .collect())
    }

    /// Lists both sides' entries of `lo..=hi`, pulls the keys the peer holds differently
    /// or alone, pushes the ones this node does.
    async fn exchange(
        &self,
        lo: u64,
        hi: u64,
        mine_exists: bool,
        theirs_exist: bool,
        pacer: &Pacer,
    ) -> Result<RoundStats, ClusterError> {
        let store = &self.inner.store;
        let mine: HashMap<Vec<u8>, [u8; 16]> = if mine_exists {
            store
                .range_entries(self.view, self.epoch, lo, hi)
                .await?
                .into_iter()
                .map(|(k, h)| (k.encode(), h))
                .collect()
        } else {
            HashMap::new()
        };
        let theirs: HashMap<Vec<u8>, [u8; 16]> = if theirs_exist {
            let request = AntiEntropyRequest::Entries {
                view: self.view.to_owned(),
                epoch: self.epoch.0,
                first: lo,
                last: hi,
            };
            match ask(self.inner, self.peer, request).await? {
                AntiEntropyResponse::Entries(entries) => entries.into_iter().collect(),
                other => return Err(unexpected(self.inner, self.peer, &other)),
            }
        } else {
            HashMap::new()
        };
        let pull: Vec<Vec<u8>> = theirs
            .iter()
            .filter(|(k, h)| mine.get(*k) != Some(h))
            .map(|(k, _)| k.clone())
            .collect();
        let push: Vec<Vec<u8>> = mine
            .iter()
            .filter(|(k, h)| theirs.get(*k) != Some(h))
            .map(|(k, _)| k.clone())
            .collect();
        let mut stats = RoundStats::default();
        for keys in pull.chunks(KEYS_PER_CALL) {
            let (merged, bytes) = self.pull(keys.to_vec()).await?;
            stats.pulled += merged;
            stats.bytes += bytes;
            pacer.moved(bytes).await;
        }
        for keys in push.chunks(KEYS_PER_CALL) {
            let (merged, bytes) = self.push(keys).await?;
            stats.pushed += merged;
            stats.bytes += bytes;
            pacer.moved(bytes).await;
        }
        Ok(stats)
    }

    /// Fetches the peer's states of `keys` and merges them here; (merged, bytes).
    async fn pull(&self, keys: Vec<Vec<u8>>) -> Result<(u64, u64), ClusterError> {
        let request = AntiEntropyRequest::States {
            view: self.view.to_owned(),
            epoch: self.epoch.0,
            keys,
        };
        let states = match ask(self.inner, self.peer, request).await? {
            AntiEntropyResponse::States(states) => states,
            other => return Err(unexpected(self.inner, self.peer, &other)),
        };
        let bytes = states.iter().map(|s| s.state.len() as u64).sum();
        let decoded = states
            .iter()
            .map(WireState::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let merged = self.inner.store.merge_live(self.view, decoded).await?;
        Ok((merged.merged as u64, bytes))
    }

    /// Sends this node's states of `keys` to the peer to merge; (merged, bytes).
    async fn push(&self, keys: &[Vec<u8>]) -> Result<(u64, u64), ClusterError> {
        let keys = wire::keys(keys)?;
        let states: Vec<WireState> = self
            .inner
            .store
            .epoch_states(self.view, self.epoch, keys)
            .await?
            .iter()
            .map(|(key, value)| WireState::new(self.epoch, key, value))
            .collect();
        if states.is_empty() {
            return Ok((0, 0));
        }
        let bytes = states.iter().map(|s| s.state.len() as u64).sum();
        let request = AntiEntropyRequest::Repair {
            view: self.view.to_owned(),
            states,
        };
        match ask(self.inner, self.peer, request).await? {
            AntiEntropyResponse::Repaired { merged, .. } => Ok((merged, bytes)),
            other => Err(unexpected(self.inner, self.peer, &other)),
        }
    }
}

/// Answers a peer's anti-entropy request from this node's store.
pub(crate) async fn serve(
    store: &Store,
    request: &AntiEntropyRequest,
) -> Result<AntiEntropyResponse, ClusterError> {
    Ok(match request {
        AntiEntropyRequest::Digests { first, last } => {
            let digests = store.range_digests(*first, *last).await?;
            AntiEntropyResponse::Digests {
                epochs: digests
                    .epochs
                    .into_iter()
                    .map(|d| (d.view, d.epoch.0, d.digest.keys, d.digest.root))
                    .collect(),
                floors: digests
                    .floors
                    .into_iter()
                    .map(|(view, epoch)| (view, epoch.0))
                    .collect(),
            }
        }
        AntiEntropyRequest::Leaves {
            view,
            epoch,
            first,
            last,
        } => AntiEntropyResponse::Leaves(
            store
                .range_leaves(view, Epoch(*epoch), *first, *last)
                .await?,
        ),
        AntiEntropyRequest::Entries {
            view,
            epoch,
            first,
            last,
        } => AntiEntropyResponse::Entries(
            store
                .range_entries(view, Epoch(*epoch), *first, *last)
                .await?
                .into_iter()
                .map(|(k, h)| (k.encode(), h))
                .collect(),
        ),
        AntiEntropyRequest::States { view, epoch, keys } => {
            let keys = wire::keys(keys)?;
            let epoch = Epoch(*epoch);
            AntiEntropyResponse::States(
                store
                    .epoch_states(view, epoch, keys)
                    .await?
                    .iter()
                    .map(|(key, value)| WireState::new(epoch, key, value))
                    .collect(),
            )
        }
        AntiEntropyRequest::Repair { view, states } => {
            let states = states
                .iter()
                .map(WireState::decode)
                .collect::<Result<Vec<_>, _>>()?;
            let merged = store.merge_live(view, states).await?;
            AntiEntropyResponse::Repaired {
                merged: merged.merged as u64,
                skipped: merged.skipped as u64,
            }
        }
    })
}
