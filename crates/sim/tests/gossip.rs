//! Membership gossip converges among many nodes: every node lists every member `up`
//! with one ring; a node cut off from all others is listed `down` by each of them, and
//! `up` again after the cut heals. CI runs 12 nodes; `SIM_GOSSIP_NODES=50,100 cargo nextest run -p
//! speedlayer-sim --test gossip --no-capture` measures bigger clusters (documented long
//! mode).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use speedlayer_sim::gossip::{converge, Start};

fn sizes() -> Vec<usize> {
    std::env::var("SIM_GOSSIP_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_agree_on_one_ring_and_see_a_node_cut_off_and_back() {
    for nodes in sizes() {
        for start in [Start::Founders, Start::Joiners] {
            let took = converge(nodes, start, Duration::from_secs(20))
                .await
                .unwrap();
            eprintln!(
                "{nodes} nodes ({start:?}): every node listed every member up with one ring after {:?}; \
                 a node cut off was listed down by every other after {:?}, up again by all {:?} after healing",
                took.agreed, took.cut_off_seen, took.healed_seen
            );
        }
    }
}
