//! How fast membership gossip converges: many coordinators with real stores on the
//! in-memory network (no delays, no faults) until every node lists every member `up`
//! and reports the same ring.

use std::time::{Duration, Instant};

use speedlayer_cluster::{Cluster, ClusterConfig};
use tokio::sync::watch;

use crate::network::Network;
use crate::run::{scratch_dir, sim_addr, start_node, SimError};

/// How the nodes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Every node founds the cluster with the whole address list: only the records
    /// have to spread.
    Founders,
    /// Node 0 founds it; every other node names only node 0 and joins (each waits the
    /// join's settle time and compares its partitions before it turns `up`).
    Joiners,
}

/// Starts `nodes` nodes as `start` says; how long until every node lists every member
/// `up` with one ring version, counted from the last node's start. Fails after `within`.
pub async fn converge(nodes: usize, start: Start, within: Duration) -> Result<Duration, SimError> {
    let base = scratch_dir()?;
    let net = Network::new(0, Duration::ZERO);
    let addrs: Vec<_> = (0..nodes).map(sim_addr).collect();
    let (stop, stopped) = watch::channel(false);
    let mut cluster: Vec<Cluster> = Vec::with_capacity(nodes);
    for (i, addr) in addrs.iter().enumerate() {
        let mut config = ClusterConfig::single(*addr);
        config.seeds = match start {
            Start::Founders => addrs.clone(),
            Start::Joiners => vec![addrs[0]],
        };
        config.replicas = nodes.min(3);
        // Node 0 has no other seed in `Joiners`: it must listen for the joiners anyway.
        config.always_listen = true;
        cluster.push(start_node(base.path(), i, &net, config, stopped.clone()).await?);
    }
    let started = Instant::now();
    let outcome = loop {
        let agreed = {
            let statuses: Vec<_> = cluster.iter().map(Cluster::status).collect();
            statuses
                .iter()
                .all(|s| s.nodes.len() == nodes && s.nodes.iter().all(|n| n.state == "up"))
                && statuses
                    .iter()
                    .all(|s| s.ring_version == statuses[0].ring_version)
        };
        if agreed {
            break Ok(started.elapsed());
        }
        if started.elapsed() > within {
            let seen: Vec<String> = cluster
                .iter()
                .map(|c| {
                    let s = c.status();
                    let states: Vec<&str> = s.nodes.iter().map(|n| n.state).collect();
                    format!("{} ring {}: {states:?}", s.addr, s.ring_version)
                })
                .collect();
            break Err(SimError::Setup(format!(
                "{nodes} nodes did not agree on their members within {within:?}:\n{}",
                seen.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    outcome
}
