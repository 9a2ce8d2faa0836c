//! Joining the cluster: binding the internode listener, taking this node's place among
//! the members (founding, joining, or back as it was), meeting the seeds, and starting
//! what runs in the background (the request listener, the failure detector with its
//! member and catalog gossip, hinted handoff, anti-entropy, a join's takeover).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use speedlayer_store::clock::wall_clock_us;
use speedlayer_store::Store;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::gossip::MemberState;
use crate::listener::{self, Admission};
use crate::membership::{Membership, PING_TIMEOUT};
use crate::metrics::ClusterMetrics;
use crate::node::{Cluster, ClusterConfig, ClusterNode};
use crate::peer::RpcError;
use crate::ring::Ring;
use crate::swim;
use crate::swim_inbox::SwimInbox;
use crate::wire::{Hello, Request, Response, PROTOCOL_VERSION};
use crate::{anti_entropy, catalog_sync, handoff, transition};

/// How often pings go out.
const PING_INTERVAL: Duration = Duration::from_millis(500);
/// Peers pinged per interval besides those marked down: in a cluster of up to this many
/// peers, every peer every interval; in a larger one, in turn (SWIM, [`crate::swim`],
/// watches every member at a cost that does not grow with the cluster).
const PING_FANOUT: usize = 4;

impl Cluster {
    /// Joins the cluster `config` describes with `store` as this node's storage: binds
    /// the internode listener (when the node takes part in a cluster), learns the
    /// members from its stored records and its seeds, and starts the failure detector
    /// with its gossip, hinted handoff, anti-entropy and (for a node joining a cluster
    /// with data) the takeover of its partitions. Runs until `stop` turns true.
    pub async fn start(
        store: Store,
        config: ClusterConfig,
        registry: &mut Registry,
        stop: watch::Receiver<bool>,
    ) -> Result<Cluster, ClusterError> {
        let metrics = ClusterMetrics::default();
        metrics.register(registry);
        let listener = if config.listens() {
            Some(
                config
                    .transport
                    .bind(config.listen)
                    .await
                    .map_err(|source| ClusterError::Bind {
                        addr: config.listen,
                        source,
                    })?,
            )
        } else {
            None
        };
        let me_addr = match &listener {
            Some(l) => l.local_addr().map_err(|source| ClusterError::Bind {
                addr: config.listen,
                source,
            })?,
            None => config.listen,
        };
        let replicas = config.replicas.max(1) as u32;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            secret: config.secret.clone().unwrap_or_default(),
            node_id: store.node_id().to_owned(),
            addr: me_addr.to_string(),
            partitions: config.partitions,
            replicas,
        };
        let members = Membership::new(
            me_addr,
            hello,
            config.rpc_timeout,
            config.max_clock_offset,
            metrics.clone(),
            config.transport.clone(),
        );
        let admission = Arc::new(Admission {
            secret: config.secret.clone().unwrap_or_default(),
            node_id: store.node_id().to_owned(),
            partitions: config.partitions,
            replicas,
            metrics: metrics.clone(),
        });
        let empty = || {
            std::sync::RwLock::new(Arc::new(Ring::of(
                Vec::new(),
                config.partitions,
                config.replicas,
            )))
        };
        let (swim, swim_inputs) = SwimInbox::new();
        let cluster = Cluster {
            inner: Arc::new(ClusterNode {
                swim,
                store,
                ring: empty(),
                next_ring: empty(),
                members,
                records: Default::default(),
                ring_changed: Default::default(),
                keeping_records: Default::default(),
                stop: stop.clone(),
                config,
                metrics,
                catching_up: Default::default(),
                known_boundaries: Default::default(),
            }),
        };
        let inner = &cluster.inner;
        let moving = take_own_place(inner).await;
        let Some(listener) = listener else {
            // One node: nobody to hint.
            drop(inner.store.take_replayed());
            return Ok(cluster);
        };
        for seed in &inner.config.seeds {
            inner.members.add(&seed.to_string());
        }
        tracing::info!(addr = %me_addr, known = inner.members.len(), replicas = inner.config.replicas, "cluster listening");
        tokio::spawn(listener::serve(
            listener,
            admission,
            inner.clone(),
            stop.clone(),
        ));
        let mut announce_to = inner.config.seeds.clone();
        announce_to.extend(
            inner
                .records()
                .values()
                .filter(|r| r.state.is_member())
                .filter_map(|r| r.addr.parse::<std::net::SocketAddr>().ok()),
        );
        tokio::spawn(swim::run(
            inner.clone(),
            swim_inputs,
            announce_to,
            stop.clone(),
        ));
        meet_seeds(inner).await;
        catch_up_catalog(inner).await;
        hint_replayed(inner).await?;
        tokio::spawn(failure_detector(inner.clone(), stop.clone()));
        tokio::spawn(anti_entropy::run(inner.clone(), stop.clone()));
        match moving {
            Some(Move::Join) => {
                tokio::spawn(transition::join(inner.clone(), stop.clone()));
            }
            Some(Move::Leave) => {
                tokio::spawn(transition::leave(inner.clone(), stop.clone()));
            }
            None => {}
        }
        tokio::spawn(handoff::run(inner.clone(), stop));
        Ok(cluster)
    }
}

/// A move of this node under way at start.
enum Move {
    /// It joins: takes over its partitions, then owns them.
    Join,
    /// It was leaving when it stopped: hands its partitions over, then leaves.
    Leave,
}

/// Sets this node's own record from what it kept and how it was started: a node new to
/// a cluster with data joins it; one that was moving goes on.
async fn take_own_place(inner: &Arc<ClusterNode>) -> Option<Move> {
    let kept = inner.load_records();
    inner.learn_records(kept.into_values().collect()).await;
    let me = inner.members.name(inner.members.me()).to_string();
    let node_id = inner.store.node_id().to_owned();
    // The same data directory was a member under another address (the node was started
    // with another --cluster): that address is this node's old self, which nobody will
    // ever answer for; left in, it would stay an unreachable owner. It is removed, as an
    // operator removes a dead node, and the node takes its place under its new address.
    let moved_from: Vec<String> = inner
        .records()
        .values()
        .filter(|r| r.node_id == node_id && r.addr != me && r.state.is_member())
        .map(|r| r.addr.clone())
        .collect();
    for old in moved_from {
        tracing::warn!(old = %old, new = %me, node = %node_id, "this node was a member at another cluster address; the old address is removed from the cluster");
        inner
            .set_state(&old, Some(&node_id), MemberState::Removed)
            .await;
    }
    let own = inner.own_record();
    match own.map(|r| r.state) {
        // Still a member: as it was (a join interrupted by a restart resumes).
        Some(MemberState::Up) => None,
        Some(MemberState::Leaving) => Some(Move::Leave),
        Some(MemberState::Joining) => Some(Move::Join),
        // New, or back after leaving or being removed.
        _ if inner.config.founds() => {
            inner.set_state(&me, Some(&node_id), MemberState::Up).await;
            None
        }
        _ => {
            inner
                .set_state(&me, Some(&node_id), MemberState::Joining)
                .await;
            Some(Move::Join)
        }
    }
}

/// Exchanges member records with the seeds before serving, so the node starts with the
/// cluster's view of its members (not only its own). Unreachable seeds are passed over;
/// the failure detector keeps trying them.
async fn meet_seeds(inner: &Arc<ClusterNode>) {
    let seeds: Vec<usize> = inner
        .config
        .seeds
        .iter()
        .filter(|s| **s != inner.config.listen)
        .filter_map(|s| inner.members.member_named(&s.to_string()))
        .collect();
    let exchanges = seeds.iter().map(|&seed| async move {
        let _ = tokio::time::timeout(PING_TIMEOUT, inner.exchange_records(seed)).await;
    });
    futures_util::future::join_all(exchanges).await;
}

/// Before the node serves: takes what the catalog of the first peer that answers has and
/// this one lacks (views declared, epochs dropped, batch views published while it was
/// down), so it does not answer with data of an epoch the cluster dropped meanwhile. A
/// peer that refuses the connection is passed over at once, one that hangs after
/// [`PING_TIMEOUT`]; with no peer up the node starts as it is (gossip catches up later).
async fn catch_up_catalog(inner: &Arc<ClusterNode>) {
    let peers: Vec<usize> = inner
        .members
        .iter()
        .into_iter()
        .filter(|(_, m)| m.peer.is_some())
        .map(|(i, _)| i)
        .collect();
    for member in peers {
        let pulled = tokio::time::timeout(PING_TIMEOUT, catalog_sync::pull(inner, member)).await;
        if pulled == Ok(true) {
            tracing::info!(peer = %inner.members.name(member), "caught up on the catalog before serving");
            return;
        }
    }
}

/// Hints every key recovery replayed from the update log to its other owners, before
/// the node serves: a state this node applied and logged but never shipped (it crashed,
/// or its journal failed, in between) reaches the other replicas through hinted handoff
/// instead of waiting for a quorum read (found by the fault suite: a node whose disk
/// filled came back with an increment its peers never got). Hints of states the others
/// already hold merge to no change.
async fn hint_replayed(inner: &Arc<ClusterNode>) -> Result<(), ClusterError> {
    let replayed = inner.store.take_replayed();
    if replayed.is_empty() {
        return Ok(());
    }
    let me = inner.members.me();
    let ring = inner.ring();
    let mut by_owner: std::collections::BTreeMap<usize, Vec<speedlayer_store::HintKey>> =
        Default::default();
    for hint in &replayed {
        let partition = ring.partition_of(&hint.key.partition);
        for &owner in ring.preference_list(partition) {
            if owner != me {
                by_owner.entry(owner).or_default().push(hint.clone());
            }
        }
    }
    for (owner, hints) in by_owner {
        inner
            .record_hints(&inner.members.name(owner), hints)
            .await?;
    }
    tracing::info!(
        keys = replayed.len(),
        "hinted the keys replayed at recovery to their other owners"
    );
    Ok(())
}

/// Every [`PING_INTERVAL`], pings the peers marked down (an answer brings one back at
/// once) and [`PING_FANOUT`] of the others in turn: answers mark a peer up, failures
/// down; the pongs measure clock offsets, and a pong whose catalog or member digest
/// differs from ours starts a catalog pull or a record exchange with that peer.
async fn failure_detector(inner: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let digest = catalog_sync::digest(&inner.store);
        let records = inner.records();
        let members_digest = crate::gossip::digest(&records);
        // Nodes that left (or were removed) are no longer pinged.
        let peers: Vec<(usize, Arc<crate::peer::Peer>)> = inner
            .members
            .iter()
            .into_iter()
            .filter(|(_, m)| records.get(&*m.name).is_none_or(|r| r.state.is_member()))
            .filter_map(|(member, m)| Some((member, m.peer.clone()?)))
            .collect();
        let (down, up): (Vec<_>, Vec<_>) = peers
            .into_iter()
            .partition(|(member, _)| !inner.members.is_up(*member));
        let in_turn = up.len().min(PING_FANOUT);
        let chosen: Vec<_> = (0..in_turn)
            .map(|k| up[(turn + k) % up.len()].clone())
            .collect();
        turn = turn.wrapping_add(in_turn);
        for (member, peer) in down.into_iter().chain(chosen) {
            let inner = inner.clone();
            tokio::spawn(async move {
                let sent = wall_clock_us();
                let ping = Request::Ping {
                    catalog: digest,
                    members: members_digest,
                };
                match peer.call(&ping, PING_TIMEOUT).await {
                    Ok(Response::Pong {
                        catalog,
                        clock_us,
                        members,
                    }) => {
                        // NTP-style: the peer read its clock about halfway through.
                        let received = wall_clock_us();
                        let midpoint = sent / 2 + received / 2;
                        let offset = clock_us as i64 - midpoint as i64;
                        inner.members.mark_up(member);
                        inner.members.note_clock_offset(member, offset);
                        if members != members_digest {
                            inner.exchange_records(member).await;
                        }
                        if catalog != digest {
                            catalog_sync::pull(&inner, member).await;
                        }
                    }
                    Ok(other) => {
                        let e = RpcError::Protocol {
                            peer: peer.name().to_owned(),
                            reason: format!("answered a ping with {other:?}"),
                        };
                        inner.members.note_failure(member, &e);
                    }
                    Err(e) => inner.members.note_failure(member, &e),
                }
            });
        }
    }
}
