//! How fast membership gossip converges, and how fast it notices a node cut off and
//! back: many coordinators with real stores on the in-memory network (no delays) until
//! every node lists every member `up` and reports the same ring, then one node is cut
//! off from every other until all the others list it `down`, then healed until all
//! list it `up` again.

use std::net::SocketAddr;
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

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct Convergence {
    /// From the last node's start until every node listed every member `up` with one
    /// ring version.
    pub agreed: Duration,
    /// From cutting the last node off until every other node listed it `down`.
    pub cut_off_seen: Duration,
    /// From healing until every node listed it `up` again.
    pub healed_seen: Duration,
}

/// Starts `nodes` nodes as `start` says and measures [`Convergence`]; each step fails
/// after `within`.
pub async fn converge(
    nodes: usize,
    start: Start,
    within: Duration,
) -> Result<Convergence, SimError> {
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
    let outcome = measure(&cluster, &net, &addrs, within).await;
    let _ = stop.send(true);
    outcome
}

async fn measure(
    cluster: &[Cluster],
    net: &Network,
    addrs: &[SocketAddr],
    within: Duration,
) -> Result<Convergence, SimError> {
    let nodes = cluster.len();
    let all_up = |c: &Cluster| {
        let s = c.status();
        s.nodes.len() == nodes && s.nodes.iter().all(|n| n.state == "up")
    };
    let agreed = wait_for(cluster, within, "agree on their members", |statuses| {
        statuses.iter().all(all_up)
            && statuses
                .iter()
                .all(|c| c.status().ring_version == statuses[0].status().ring_version)
    })
    .await?;
    let Some((&cut, others)) = addrs.split_last() else {
        return Err(SimError::Setup("no nodes".into()));
    };
    for &other in others {
        net.block(cut, other);
        net.block(other, cut);
    }
    let cut_name = cut.to_string();
    let sees_cut_down = |c: &Cluster| {
        c.status()
            .nodes
            .iter()
            .any(|n| n.addr == cut_name && n.state == "down")
    };
    let others_cluster = &cluster[..nodes - 1];
    let cut_off_seen = wait_for(others_cluster, within, "see the cut-off node down", |c| {
        c.iter().all(sees_cut_down)
    })
    .await?;
    net.heal();
    let healed_seen = wait_for(cluster, within, "see the healed node up", |statuses| {
        statuses.iter().all(all_up)
    })
    .await?;
    Ok(Convergence {
        agreed,
        cut_off_seen,
        healed_seen,
    })
}

/// Polls until `done` holds for the cluster; how long it took, or an error naming
/// `what` with every node's view after `within`.
async fn wait_for(
    cluster: &[Cluster],
    within: Duration,
    what: &str,
    done: impl Fn(&[Cluster]) -> bool,
) -> Result<Duration, SimError> {
    let started = Instant::now();
    loop {
        if done(cluster) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            let seen: Vec<String> = cluster
                .iter()
                .map(|c| {
                    let s = c.status();
                    let mut states = std::collections::BTreeMap::<&str, usize>::new();
                    for n in &s.nodes {
                        *states.entry(n.state).or_default() += 1;
                    }
                    format!("{} ring {}: {states:?}", s.addr, s.ring_version)
                })
                .collect();
            return Err(SimError::Setup(format!(
                "{} nodes did not {what} within {within:?}:\n{}",
                cluster.len(),
                seen.join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
