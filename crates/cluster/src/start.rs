//! Joining the cluster: binding the internode listener, building the ring and its
//! members from the seed list, and starting what runs in the background (the request
//! listener, the failure detector with its catalog gossip, hinted handoff).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use speedlayer_store::clock::wall_clock_us;
use speedlayer_store::Store;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::listener::{self, Admission};
use crate::membership::{Membership, PING_TIMEOUT};
use crate::metrics::ClusterMetrics;
use crate::node::{Cluster, ClusterConfig, ClusterNode};
use crate::peer::RpcError;
use crate::ring::Ring;
use crate::wire::{Hello, Request, Response, PROTOCOL_VERSION};
use crate::{anti_entropy, catalog_sync, handoff};

/// How often each peer is pinged.
const PING_INTERVAL: Duration = Duration::from_millis(500);

impl Cluster {
    /// Joins the cluster `config` describes with `store` as this node's storage: binds
    /// the internode listener (only when peers are configured) and starts the failure
    /// detector and hinted handoff. Runs until `stop` turns true.
    pub async fn start(
        store: Store,
        config: ClusterConfig,
        registry: &mut Registry,
        stop: watch::Receiver<bool>,
    ) -> Result<Cluster, ClusterError> {
        let metrics = ClusterMetrics::default();
        metrics.register(registry);
        let listener = if config.has_peers() {
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
        let mut names: Vec<String> = config.seeds.iter().map(|s| s.to_string()).collect();
        names.push(me_addr.to_string());
        let ring = Ring::new(names, config.partitions, config.replicas);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            secret: config.secret.clone().unwrap_or_default(),
            node_id: store.node_id().to_owned(),
            addr: me_addr.to_string(),
            partitions: ring.partitions(),
            replicas: ring.replicas() as u32,
        };
        let members = Membership::new(
            ring.members(),
            me_addr,
            &hello,
            config.rpc_timeout,
            config.max_clock_offset,
            metrics.clone(),
            config.transport.clone(),
        );
        let admission = Arc::new(Admission {
            secret: config.secret.clone().unwrap_or_default(),
            node_id: store.node_id().to_owned(),
            partitions: ring.partitions(),
            replicas: ring.replicas() as u32,
        });
        let cluster = Cluster {
            inner: Arc::new(ClusterNode {
                store,
                ring,
                members,
                config,
                metrics,
                catching_up: Default::default(),
                known_boundaries: Default::default(),
            }),
        };
        if let Some(listener) = listener {
            tracing::info!(addr = %me_addr, members = cluster.inner.members.len(), replicas = cluster.inner.ring.replicas(), "cluster listening");
            tokio::spawn(listener::serve(
                listener,
                admission,
                cluster.inner.clone(),
                stop.clone(),
            ));
            catch_up_catalog(&cluster.inner).await;
            hint_replayed(&cluster.inner).await?;
            tokio::spawn(failure_detector(cluster.inner.clone(), stop.clone()));
            tokio::spawn(anti_entropy::run(cluster.inner.clone(), stop.clone()));
            tokio::spawn(handoff::run(cluster.inner.clone(), stop));
        } else {
            // One node: nobody to hint.
            drop(cluster.inner.store.take_replayed());
        }
        Ok(cluster)
    }
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
    let mut by_owner: std::collections::BTreeMap<usize, Vec<speedlayer_store::HintKey>> =
        Default::default();
    for hint in &replayed {
        let partition = inner.ring.partition_of(&hint.key.partition);
        for &owner in inner.ring.preference_list(partition) {
            if owner != me {
                by_owner.entry(owner).or_default().push(hint.clone());
            }
        }
    }
    for (owner, hints) in by_owner {
        inner.record_hints(inner.members.name(owner), hints).await?;
    }
    tracing::info!(
        keys = replayed.len(),
        "hinted the keys replayed at recovery to their other owners"
    );
    Ok(())
}

/// Pings every peer every [`PING_INTERVAL`]; answers mark it up, failures down. A pong
/// whose catalog digest differs from ours starts a catalog pull from that peer.
async fn failure_detector(inner: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let digest = catalog_sync::digest(&inner.store);
        for (member, m) in inner.members.iter() {
            let Some(peer) = m.peer.clone() else { continue };
            let inner = inner.clone();
            tokio::spawn(async move {
                let sent = wall_clock_us();
                match peer
                    .call(&Request::Ping { catalog: digest }, PING_TIMEOUT)
                    .await
                {
                    Ok(Response::Pong { catalog, clock_us }) => {
                        // NTP-style: the peer read its clock about halfway through.
                        let received = wall_clock_us();
                        let midpoint = sent / 2 + received / 2;
                        let offset = clock_us as i64 - midpoint as i64;
                        inner.members.mark_up(member);
                        inner.members.note_clock_offset(member, offset);
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
