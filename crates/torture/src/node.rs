//! One `speedlayer serve` process of the cluster under test, in its network namespace.
//!
//! The process is started with `ip netns exec NS speedlayer serve …` (with libfaketime
//! preloaded for a skewed clock); `ip` execs, so the child's pid is the node's and
//! SIGKILL, SIGSTOP and SIGCONT reach it. Its data directory may be a small tmpfs (for the full-disk fault), mounted
//! here and unmounted on drop. A node is SIGKILLed and reaped when dropped.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::net::{run, NetError};

/// How to start one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The `speedlayer` binary.
    pub bin: PathBuf,
    /// Its network namespace.
    pub namespace: String,
    /// Its address in the namespace.
    pub addr: String,
    /// Node id (`n0`, …).
    pub id: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file (appended across restarts).
    pub log: PathBuf,
    /// Every node's cluster address.
    pub seeds: Vec<String>,
    /// Replication factor.
    pub replicas: usize,
    /// Cluster secret.
    pub secret: String,
    /// Further `serve` flags.
    pub extra: Vec<String>,
    /// Size of the tmpfs the data directory is mounted on, if any.
    pub tmpfs_mib: Option<u32>,
}

/// Ports every node listens on (at its own address).
pub const HTTP_PORT: u16 = 7780;
/// RESP port.
pub const RESP_PORT: u16 = 7781;
/// Internode port.
pub const CLUSTER_PORT: u16 = 7782;

/// Where Debian and others put libfaketime (the thread-safe `MT` build first: a node is
/// multi-threaded).
const LIBFAKETIME: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

fn libfaketime() -> Option<&'static str> {
    LIBFAKETIME
        .into_iter()
        .find(|path| Path::new(path).exists())
}

/// A running (or killed) node.
pub struct NodeProcess {
    spec: NodeSpec,
    child: Option<Child>,
    paused: bool,
    skew_secs: Option<i64>,
    mounted: bool,
    filler: Option<PathBuf>,
}

/// A node could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Spawning failed.
    #[error("starting node {id}: {reason}")]
    Spawn {
        /// Node id.
        id: String,
        /// What happened.
        reason: String,
    },
    /// A command failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

impl NodeProcess {
    /// Prepares the data directory (mounting its tmpfs) and starts the node.
    pub fn start(spec: NodeSpec) -> Result<NodeProcess, NodeError> {
        std::fs::create_dir_all(&spec.data_dir).map_err(|e| NodeError::Spawn {
            id: spec.id.clone(),
            reason: format!("{}: {e}", spec.data_dir.display()),
        })?;
        let mut node = NodeProcess {
            spec,
            child: None,
            paused: false,
            skew_secs: None,
            mounted: false,
            filler: None,
        };
        if let Some(mib) = node.spec.tmpfs_mib {
            let dir = node.spec.data_dir.display().to_string();
            run(
                "mount",
                &["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", &dir],
            )?;
            node.mounted = true;
        }
        node.spawn()?;
        Ok(node)
    }

    /// The node's HTTP base URL.
    pub fn base(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.spec.addr)
    }

    /// The node's RESP address.
    pub fn resp_addr(&self) -> String {
        format!("{}:{RESP_PORT}", self.spec.addr)
    }

    /// Whether the process runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is stopped by SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The clock skew it runs with.
    pub fn skew(&self) -> Option<i64> {
        self.skew_secs
    }

    /// Whether its disk is filled.
    pub fn disk_full(&self) -> bool {
        self.filler.is_some()
    }

    fn spawn(&mut self) -> Result<(), NodeError> {
        let fail = |reason: String| NodeError::Spawn {
            id: self.spec.id.clone(),
            reason,
        };
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(|e| fail(format!("{}: {e}", self.spec.log.display())))?;
        let s = &self.spec;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &s.namespace]);
        if let Some(skew) = self.skew_secs {
            // libfaketime preloaded directly: the `faketime` wrapper forks and waits, so
            // SIGKILL would reach the wrapper and leave the node running.
            let library = libfaketime().ok_or_else(|| {
                fail(format!(
                    "libfaketime not found (looked in {}); install faketime",
                    LIBFAKETIME.join(", ")
                ))
            })?;
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", format!("{skew:+}s"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        command
            .arg(&s.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--http", &format!("{}:{HTTP_PORT}", s.addr)])
            .args(["--resp", &format!("{}:{RESP_PORT}", s.addr)])
            .args(["--cluster", &format!("{}:{CLUSTER_PORT}", s.addr)])
            .args(["--node-id", &s.id])
            .args(["--seeds", &s.seeds.join(",")])
            .args(["--replicas", &s.replicas.to_string()])
            .args(["--cluster-secret", &s.secret])
            .args(&s.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let _ = writeln!(log, "==== torture: starting {:?}", command);
        let stderr = log.try_clone().map_err(|e| fail(e.to_string()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: &str) -> Result<(), NodeError> {
        if let Some(child) = &self.child {
            run("kill", &[signal, &child.id().to_string()])?;
        }
        Ok(())
    }

    /// SIGKILL (resuming it first if paused, so it dies at once) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Kill (if running) and start again, with the clock `skew_secs` off.
    pub fn restart(&mut self, skew_secs: Option<i64>) -> Result<(), NodeError> {
        self.kill();
        self.skew_secs = skew_secs;
        self.spawn()
    }

    /// SIGSTOP.
    pub fn pause(&mut self) -> Result<(), NodeError> {
        self.signal("-STOP")?;
        self.paused = self.child.is_some();
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> Result<(), NodeError> {
        self.signal("-CONT")?;
        self.paused = false;
        Ok(())
    }

    /// Fills the data directory's file system (the node's tmpfs) with a filler file.
    pub fn fill_disk(&mut self) -> Result<(), NodeError> {
        let path = self.spec.data_dir.join("torture-filler");
        let fail = |e: std::io::Error| NodeError::Spawn {
            id: self.spec.id.clone(),
            reason: format!("filling {}: {e}", path.display()),
        };
        let mut file = File::create(&path).map_err(fail)?;
        let chunk = vec![0u8; 1 << 16];
        let mut size = chunk.len();
        // Write until nothing more fits, in smaller and smaller pieces.
        while size > 0 {
            match file.write_all(&chunk[..size]) {
                Ok(()) => {}
                Err(_) => size /= 2,
            }
        }
        let _ = file.sync_all();
        self.filler = Some(path);
        Ok(())
    }

    /// Removes the filler: space returns.
    pub fn free_disk(&mut self) {
        if let Some(path) = self.filler.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The node's log.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.signal("-CONT");
        }
        self.kill();
        self.free_disk();
        if self.mounted {
            let _ = run("umount", &[&self.spec.data_dir.display().to_string()]);
        }
    }
}
