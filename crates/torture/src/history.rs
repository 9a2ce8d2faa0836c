//! The history: every invocation, its outcome, every fault and every final read, one JSON
//! object per line.
//!
//! Each workload client appends its own file (`client-*.jsonl`) and the controller its own
//! (`controller.jsonl`); [`read_dir`] merges them by time. Times are microseconds of the
//! wall clock of the one machine every process runs on, so they are comparable. The
//! checker ([`crate::checker`]) needs nothing else: a failing history can be kept and
//! checked again (`speedlayer-torture check DIR`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Microseconds since 1970 now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The views the workload writes, by type.
pub const COUNTER_VIEW: &str = "t_counter";
/// A set view.
pub const SET_VIEW: &str = "t_set";
/// A distinct-count (HyperLogLog) view.
pub const HLL_VIEW: &str = "t_hll";
/// A max view.
pub const MAX_VIEW: &str = "t_max";
/// A register (last writer wins) view.
pub const REGISTER_VIEW: &str = "t_reg";

/// Every workload view and its type.
pub const VIEWS: [(&str, &str); 5] = [
    (COUNTER_VIEW, "counter"),
    (SET_VIEW, "set"),
    (HLL_VIEW, "hll"),
    (MAX_VIEW, "max"),
    (REGISTER_VIEW, "register"),
];

/// A producer id: the write is counted once per id, however often it is retried.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerId {
    /// The writer.
    pub writer: String,
    /// Its sequence number.
    pub seq: u64,
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Add `by` to a counter.
    Incr {
        /// Row key.
        key: String,
        /// Amount.
        by: i64,
        /// The producer id every attempt carries (none: an anonymous increment).
        id: Option<ProducerId>,
    },
    /// Add a member to a set.
    Add {
        /// Row key.
        key: String,
        /// The member (unique per invocation).
        member: String,
    },
    /// Remove a member from a set (observed-remove).
    Remove {
        /// Row key.
        key: String,
        /// The member.
        member: String,
    },
    /// Add a member to a distinct count.
    PfAdd {
        /// Row key.
        key: String,
        /// The member (unique per invocation).
        member: String,
    },
    /// Offer a value to a max.
    Max {
        /// Row key.
        key: String,
        /// The value.
        value: i64,
    },
    /// Set a register.
    Set {
        /// Row key.
        key: String,
        /// The value (unique per invocation).
        value: String,
    },
}

impl Op {
    /// The view the op writes.
    pub fn view(&self) -> &'static str {
        match self {
            Op::Incr { .. } => COUNTER_VIEW,
            Op::Add { .. } | Op::Remove { .. } => SET_VIEW,
            Op::PfAdd { .. } => HLL_VIEW,
            Op::Max { .. } => MAX_VIEW,
            Op::Set { .. } => REGISTER_VIEW,
        }
    }

    /// The row key the op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Incr { key, .. }
            | Op::Add { key, .. }
            | Op::Remove { key, .. }
            | Op::PfAdd { key, .. }
            | Op::Max { key, .. }
            | Op::Set { key, .. } => key,
        }
    }
}

/// The protocol an attempt used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// HTTP/JSON.
    Http,
    /// The Redis protocol.
    Resp,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An attempt of an operation was sent.
    Invoke {
        /// Time (µs).
        t: u64,
        /// The client (one sequential worker).
        client: String,
        /// The logical operation, unique per client; retries share it.
        op_id: u64,
        /// 1 for the first attempt.
        attempt: u32,
        /// The node the attempt was sent to.
        node: usize,
        /// How.
        proto: Proto,
        /// `one`, `quorum` or `all`.
        consistency: String,
        /// `strict` or `sloppy`.
        quorum: String,
        /// What.
        op: Op,
    },
    /// The attempt was acknowledged.
    Ok {
        /// Time (µs).
        t: u64,
        /// The client.
        client: String,
        /// The operation.
        op_id: u64,
        /// The attempt.
        attempt: u32,
    },
    /// The attempt was answered with an error: it may or may not have been applied.
    Fail {
        /// Time (µs).
        t: u64,
        /// The client.
        client: String,
        /// The operation.
        op_id: u64,
        /// The attempt.
        attempt: u32,
        /// HTTP status (0 for RESP or no answer).
        status: u16,
        /// The error.
        error: String,
    },
    /// No answer within the client's timeout: it may or may not have been applied.
    Timeout {
        /// Time (µs).
        t: u64,
        /// The client.
        client: String,
        /// The operation.
        op_id: u64,
        /// The attempt.
        attempt: u32,
    },
    /// The fault state changed (recorded after a fault is in place and before it is
    /// lifted, so the interval between records is certain).
    Fault {
        /// Time (µs).
        t: u64,
        /// Cycle of the scenario (from 1).
        cycle: usize,
        /// The step that changed it.
        step: String,
        /// `reach[i][j]`: node `i` can exchange packets with node `j` (and is running and
        /// not paused). `None` where it is uncertain (random loss).
        reach: Vec<Vec<Option<bool>>>,
        /// Nodes running, not paused.
        alive: Vec<bool>,
    },
    /// A paused workload saw every node's `local` answers agree.
    Converged {
        /// Time (µs).
        t: u64,
        /// Cycle.
        cycle: usize,
        /// How long after the heal.
        after_ms: u64,
    },
    /// They did not agree within the bound.
    NotConverged {
        /// Time (µs).
        t: u64,
        /// Cycle.
        cycle: usize,
        /// How long the controller waited.
        waited_ms: u64,
        /// The answers that differed.
        detail: String,
    },
    /// A read after the run: the workload stopped, every fault healed.
    Final {
        /// Time (µs).
        t: u64,
        /// View.
        view: String,
        /// Row key.
        key: String,
        /// Node that answered.
        node: usize,
        /// `local` or `quorum`.
        consistency: String,
        /// The answer's `value`.
        value: serde_json::Value,
    },
    /// Facts about the run the checker needs.
    Setup {
        /// Time (µs).
        t: u64,
        /// Nodes.
        nodes: usize,
        /// Replication factor.
        replicas: usize,
        /// The scenario text.
        scenario: String,
        /// The broken switches the run used (empty for an honest run).
        broken: Vec<String>,
    },
}

impl Record {
    /// The record's time (µs).
    pub fn t(&self) -> u64 {
        match self {
            Record::Invoke { t, .. }
            | Record::Ok { t, .. }
            | Record::Fail { t, .. }
            | Record::Timeout { t, .. }
            | Record::Fault { t, .. }
            | Record::Converged { t, .. }
            | Record::NotConverged { t, .. }
            | Record::Final { t, .. }
            | Record::Setup { t, .. } => *t,
        }
    }
}

/// Appends records to one history file, flushing each line (a killed client loses at most
/// the line it was writing).
pub struct HistoryWriter {
    out: BufWriter<File>,
}

impl HistoryWriter {
    /// Creates (or appends to) `path`.
    pub fn create(path: &Path) -> std::io::Result<HistoryWriter> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(HistoryWriter {
            out: BufWriter::new(file),
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a record.
    #[error("{path} line {line}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number (from 1).
        line: usize,
        /// The error.
        source: serde_json::Error,
    },
}

/// Every record of every `*.jsonl` file in `dir`, in time order. A last line cut short (a
/// writer killed mid-line) is skipped.
pub fn read_dir(dir: &Path) -> Result<Vec<Record>, HistoryError> {
    let io = |path: &Path, source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut records = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        let lines: Vec<String> = BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| io(&path, e))?;
        let last = lines.len();
        for (n, line) in lines.into_iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(&line) {
                Ok(record) => records.push(record),
                Err(_) if n + 1 == last && !line.ends_with('}') => {}
                Err(source) => {
                    return Err(HistoryError::Parse {
                        path: path.clone(),
                        line: n + 1,
                        source,
                    })
                }
            }
        }
    }
    records.sort_by_key(Record::t);
    Ok(records)
}
