//! speedlayer's fault suite, Jepsen-style: real `speedlayer serve` processes, each in its
//! own network namespace, faults made by the kernel and by signals, workload clients that
//! record every invocation and its outcome, and a checker that reads the history.
//!
//! It stands outside the product's data flow: it talks to nodes only as clients do (HTTP
//! and RESP) and depends on no speedlayer crate, so it tests the binary users run.
//! - [`scenario`]: what happens, in a small readable form (`Partition([a],[b,c]);
//!   Wait(5s); Heal; AssertConverged`), parsed, printed and drawn from a seed.
//! - [`net`]: namespaces, veth pairs, a bridge, nftables rules; removed on drop.
//! - [`node`]: one node process (SIGKILL, SIGSTOP/SIGCONT, restart under `faketime`,
//!   a tmpfs data directory that can be filled).
//! - [`workload`]: the clients (a process per client namespace).
//! - [`history`]: the records, one JSON object per line.
//! - [`checker`]: the properties and the measurements (pure).
//! - [`run`]: the controller tying them together.
//!
//! See the crate's README for how to run it.

pub mod checker;
pub mod history;
pub mod net;
pub mod node;
pub mod run;
pub mod scenario;
pub mod workload;
