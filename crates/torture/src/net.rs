//! The network the cluster runs on, and the faults the kernel makes in it.
//!
//! Every node and every workload client gets its own network namespace with an `eth0`
//! (one end of a veth pair whose other end is on a bridge in the harness's namespace; the
//! harness has an address on the bridge too, so it reaches every node). Faults between
//! nodes are nftables rules in the nodes' namespaces (`output` chain: packets to a peer
//! dropped, always or at random), so clients keep reaching every node while the nodes
//! cannot reach each other, as in Jepsen; a cut link ([`Network::set_cut`]) takes the
//! node's veth down on the bridge side, so nobody reaches it. Everything is named after the
//! harness's pid (`tt{pid}…`) and removed on drop; [`cleanup_stale`] removes what a
//! harness killed with SIGKILL left behind. Needs root, iproute2 and nftables.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use crate::scenario::NodeIx;

/// A command the harness needed failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command could not run or failed.
    #[error("{command}: {reason} (the fault harness needs root, iproute2 and nftables)")]
    Command {
        /// The command line.
        command: String,
        /// What happened.
        reason: String,
    },
}

/// Runs `program args` and fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<(), NetError> {
    let command = format!("{program} {}", args.join(" "));
    let fail = |reason: String| NetError::Command {
        command: command.clone(),
        reason,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let output = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Packet faults between nodes; the rest of the fault state (processes) lives with the
/// nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// `(from, to)`: packets from `from` to `to` are dropped.
    pub drops: BTreeSet<(NodeIx, NodeIx)>,
    /// Percentage of the packets a node sends to other nodes that are lost.
    pub loss: BTreeMap<NodeIx, u8>,
    /// Nodes whose link is down.
    pub cut: BTreeSet<NodeIx>,
}

impl LinkFaults {
    /// Whether there is no fault.
    pub fn is_healthy(&self) -> bool {
        self.drops.is_empty() && self.loss.is_empty() && self.cut.is_empty()
    }

    /// Drops packets both ways between every pair of nodes in different groups.
    pub fn partition(&mut self, groups: &[Vec<NodeIx>]) {
        for (g, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(g + 1) {
                for &x in group {
                    for &y in other {
                        self.drops.insert((x, y));
                        self.drops.insert((y, x));
                    }
                }
            }
        }
    }

    /// Whether `i` and `j` can hold a TCP conversation: `Some(false)` when packets are
    /// dropped either way or a link is down, `None` when some are lost at random.
    pub fn reach(&self, i: NodeIx, j: NodeIx) -> Option<bool> {
        if i == j {
            return Some(true);
        }
        if self.cut.contains(&i)
            || self.cut.contains(&j)
            || self.drops.contains(&(i, j))
            || self.drops.contains(&(j, i))
        {
            return Some(false);
        }
        if self.loss.contains_key(&i) || self.loss.contains_key(&j) {
            return None;
        }
        Some(true)
    }
}

/// The namespaces, links and bridge of one harness run.
pub struct Network {
    tag: String,
    subnet: String,
    nodes: usize,
    clients: usize,
    /// Rules now in place (so a change rewrites only what differs).
    applied: LinkFaults,
}

/// The harness's address on the bridge (last octet).
const HOST_OCTET: usize = 254;
/// First client address (last octet).
const CLIENT_OCTET: usize = 101;

impl Network {
    /// `nodes` node namespaces and `clients` client namespaces on one bridge.
    pub fn create(nodes: usize, clients: usize) -> Result<Network, NetError> {
        let pid = std::process::id();
        let tag = format!("tt{pid}");
        let subnet = format!("10.{}.{}", 100 + (pid / 250) % 150, pid % 250);
        let net = Network {
            tag,
            subnet,
            nodes,
            clients,
            applied: LinkFaults::default(),
        };
        // From here on, a failure drops `net`, which removes what was made so far.
        let bridge = net.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.{HOST_OCTET}/24", net.subnet),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            net.attach(&net.node_namespace(i), &net.node_link(i), &net.node_addr(i))?;
            let ns = net.node_namespace(i);
            run("ip", &["netns", "exec", &ns, "nft", "flush", "ruleset"])?;
        }
        for c in 0..clients {
            net.attach(
                &net.client_namespace(c),
                &net.client_link(c),
                &net.client_addr(c),
            )?;
        }
        Ok(net)
    }

    fn attach(&self, ns: &str, host_link: &str, addr: &str) -> Result<(), NetError> {
        let peer = format!("{host_link}p");
        run("ip", &["netns", "add", ns])?;
        run(
            "ip",
            &["netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        )?;
        run(
            "ip",
            &[
                "link", "add", host_link, "type", "veth", "peer", "name", &peer,
            ],
        )?;
        run("ip", &["link", "set", &peer, "netns", ns])?;
        run(
            "ip",
            &[
                "netns", "exec", ns, "ip", "link", "set", &peer, "name", "eth0",
            ],
        )?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "ip",
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ],
        )?;
        run(
            "ip",
            &["netns", "exec", ns, "ip", "link", "set", "eth0", "up"],
        )?;
        run("ip", &["link", "set", host_link, "master", &self.bridge()])?;
        run("ip", &["link", "set", host_link, "up"])
    }

    /// Node `i`'s address.
    pub fn node_addr(&self, i: NodeIx) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Client `c`'s address.
    pub fn client_addr(&self, c: usize) -> String {
        format!("{}.{}", self.subnet, CLIENT_OCTET + c)
    }

    /// Node `i`'s namespace.
    pub fn node_namespace(&self, i: NodeIx) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Client `c`'s namespace.
    pub fn client_namespace(&self, c: usize) -> String {
        format!("{}c{c}", self.tag)
    }

    fn node_link(&self, i: NodeIx) -> String {
        format!("{}h{i}", self.tag)
    }

    fn client_link(&self, c: usize) -> String {
        format!("{}k{c}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Puts `faults` in place: rewrites the rules of every node whose rules change and
    /// sets links up or down.
    pub fn apply(&mut self, faults: &LinkFaults) -> Result<(), NetError> {
        for i in 0..self.nodes {
            if self.rules(&self.applied, i) != self.rules(faults, i) {
                let script = format!(
                    "flush ruleset\ntable inet torture {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{}  }}\n}}\n",
                    self.rules(faults, i)
                );
                let ns = self.node_namespace(i);
                run_with_input(
                    "ip",
                    &["netns", "exec", &ns, "nft", "-f", "-"],
                    Some(&script),
                )?;
            }
            let (was, is) = (self.applied.cut.contains(&i), faults.cut.contains(&i));
            if was != is {
                let state = if is { "down" } else { "up" };
                run("ip", &["link", "set", &self.node_link(i), state])?;
            }
        }
        self.applied = faults.clone();
        Ok(())
    }

    /// The nft rules of node `i`'s output chain under `faults`.
    fn rules(&self, faults: &LinkFaults, i: NodeIx) -> String {
        let mut rules = String::new();
        for (_, to) in faults.drops.iter().filter(|(from, _)| *from == i) {
            rules.push_str(&format!("    ip daddr {} drop\n", self.node_addr(*to)));
        }
        if let Some(percent) = faults.loss.get(&i) {
            let peers: Vec<String> = (0..self.nodes)
                .filter(|&j| j != i)
                .map(|j| self.node_addr(j))
                .collect();
            rules.push_str(&format!(
                "    ip daddr {{ {} }} numgen random mod 100 < {percent} drop\n",
                peers.join(", ")
            ));
        }
        rules
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the other.
        for i in 0..self.nodes {
            let _ = run("ip", &["netns", "del", &self.node_namespace(i)]);
        }
        for c in 0..self.clients {
            let _ = run("ip", &["netns", "del", &self.client_namespace(c)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

/// Removes the namespaces and bridges of harness runs whose process is gone (a harness
/// killed with SIGKILL cannot clean up after itself). Returns what it removed.
pub fn cleanup_stale() -> Vec<String> {
    let alive = |tag: &str| -> bool {
        tag.strip_prefix("tt")
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>().ok()
            })
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut removed = Vec::new();
    let list = |args: &[&str]| -> Vec<String> {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    for line in list(&["netns", "list"]) {
        let name = line.split_whitespace().next().unwrap_or("").to_string();
        if name.starts_with("tt") && !alive(&name) && run("ip", &["netns", "del", &name]).is_ok() {
            removed.push(name);
        }
    }
    for line in list(&["-o", "link", "show", "type", "bridge"]) {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name).to_string();
        if name.starts_with("tt")
            && name.ends_with("br")
            && !alive(&name)
            && run("ip", &["link", "del", &name]).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_and_a_one_way_drop_cut_reach() {
        let mut f = LinkFaults::default();
        f.partition(&[vec![0], vec![1, 2]]);
        assert_eq!(f.reach(0, 1), Some(false));
        assert_eq!(f.reach(2, 0), Some(false));
        assert_eq!(f.reach(1, 2), Some(true));
        let mut one_way = LinkFaults::default();
        one_way.drops.insert((0, 1));
        assert_eq!(
            one_way.reach(1, 0),
            Some(false),
            "TCP needs both directions"
        );
        one_way.loss.insert(2, 30);
        assert_eq!(one_way.reach(2, 1), None);
    }
}
