//! Network namespaces for fault tests that cut the network in the kernel, not in our code.
//!
//! [`Netns::create`] makes one namespace per node, each with an `eth0` (a veth pair whose
//! other end is on a bridge in the test's namespace, which also has an address on the
//! bridge's subnet so the test reaches every node over it). [`Netns::cut`] takes a node's
//! link down on the bridge side: the kernel drops everything between it and the others,
//! including the test process, while the node keeps running and answers requests made
//! from inside its namespace ([`Netns::http_get`], with Python's urllib). Needs root and
//! iproute2; a test that cannot set them up fails (it does not skip). Everything is named
//! after the test process's pid and removed on drop.

use std::process::Command;

/// Namespaces `s{pid}n{i}`, host-side links `s{pid}h{i}`, bridge `s{pid}br`, subnet
/// `10.A.B.0/24` (A, B from the pid).
pub struct Netns {
    tag: String,
    subnet: String,
    nodes: usize,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running ip {args:?} (iproute2 and root are needed): {e}"));
    assert!(status.success(), "ip {args:?} failed: {status}");
}

impl Netns {
    /// `nodes` namespaces joined by a bridge, with the test's side on `.254`.
    pub fn create(nodes: usize) -> Netns {
        let pid = std::process::id();
        let tag = format!("s{}", pid % 100_000);
        let subnet = format!("10.{}.{}", 100 + (pid / 250) % 150, pid % 250);
        let net = Netns { tag, subnet, nodes };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", net.subnet),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..nodes {
            let (ns, host, peer) = (
                net.namespace(i),
                net.host_link(i),
                format!("{}p{i}", net.tag),
            );
            ip(&["netns", "add", &ns]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &ns]);
            ip(&[
                "netns", "exec", &ns, "ip", "link", "set", &peer, "name", "eth0",
            ]);
            let addr = format!("{}/24", net.addr(i));
            ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0",
            ]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"]);
            ip(&["link", "set", &host, "master", &bridge]);
            ip(&["link", "set", &host, "up"]);
        }
        net
    }

    /// Node `i`'s address on the bridge.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Node `i`'s namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn host_link(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Cuts node `i` off: its link goes down on the bridge side.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.host_link(i), "down"]);
    }

    /// Joins node `i` again.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.host_link(i), "up"]);
    }

    /// `GET url` from inside node `i`'s namespace (it answers there even when cut off):
    /// the status and body.
    pub fn http_get(&self, i: usize, url: &str) -> (u16, String) {
        let script = "import sys, urllib.request, urllib.error\n\
try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=10)\n    code, body = r.status, r.read()\n\
except urllib.error.HTTPError as e:\n    code, body = e.code, e.read()\n\
sys.stdout.write(str(code) + '\\n' + body.decode())\n";
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespace(i),
                "python3",
                "-c",
                script,
                url,
            ])
            .output()
            .expect("running python3 in a namespace");
        assert!(
            output.status.success(),
            "GET {url} in {}: {}",
            self.namespace(i),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
        (code.parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the host end.
        for i in 0..self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}
