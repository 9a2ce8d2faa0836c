//! A workload client: sequential workers that write every view type over HTTP and RESP,
//! at every consistency level, and record each attempt to the history.
//!
//! It runs as its own process (`speedlayer-torture client`), started by the controller in
//! a client namespace, and obeys one-word commands on standard input: `pause` (finish
//! what is in flight, then answer `paused`), `resume`, and `drain` (retry every
//! unacknowledged retriable operation with its producer id until it is acknowledged or
//! the drain deadline passes, then answer `drained N` with the number left and exit).
//!
//! Retries: an increment over HTTP carries a producer id `{writer, seq}`, and a failed or
//! timed-out attempt is retried once at once through another node, with the same id; set
//! adds, distinct-count adds and max offers are idempotent and retried the same way.
//! Increments over RESP are anonymous (RESP has no producer id yet) and never retried;
//! removes and register sets are not retried either (a late retry would reorder them).
//! The broken switch `anonymous_retries` sends HTTP increments without their id, so a
//! retry of an attempt that was applied but not acknowledged counts twice: the checker
//! must catch it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::history::{now_us, HistoryWriter, Op, ProducerId, Proto, Record};
use crate::scenario::SeededRng;

/// One node as a client reaches it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    /// HTTP base URL.
    pub http: String,
    /// RESP `host:port`.
    pub resp: String,
}

/// Everything a client process needs (passed as JSON on its command line).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Client name (`c0`, …); workers are `c0w0`, `c0w1`, ….
    pub name: String,
    /// The node it prefers (half its attempts go there).
    pub home: usize,
    /// Every node.
    pub nodes: Vec<Endpoint>,
    /// Sequential workers.
    pub workers: usize,
    /// Seed of its choices.
    pub seed: u64,
    /// History file.
    pub history: PathBuf,
    /// Client timeout per attempt (ms).
    pub timeout_ms: u64,
    /// Pause between operations of one worker (ms).
    pub think_ms: u64,
    /// How long a drain may retry (s).
    pub drain_secs: u64,
    /// Broken switch: HTTP increments without producer ids.
    pub anonymous_retries: bool,
}

/// What the workers are told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Run,
    Pause,
    Drain,
}

/// A client-side failure that ends the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The history could not be written.
    #[error("history {path}: {source}")]
    History {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

struct Shared {
    config: ClientConfig,
    http: reqwest::Client,
    history: Mutex<HistoryWriter>,
    mode: watch::Receiver<Mode>,
    paused: AtomicUsize,
    done: AtomicUsize,
}

impl Shared {
    fn record(&self, record: Record) {
        if let Ok(mut history) = self.history.lock() {
            // A history that cannot be written makes the run's verdict meaningless: the
            // controller sees the client die (its stdout closes) and fails the run.
            if history.write(&record).is_err() {
                std::process::exit(3);
            }
        }
    }
}

/// The outcome of one attempt.
enum Outcome {
    Ok,
    Fail(u16, String),
    Timeout,
}

/// An operation not yet acknowledged that may be retried.
struct Pending {
    op_id: u64,
    op: Op,
    attempts: u32,
}

struct Worker {
    name: String,
    shared: Arc<Shared>,
    rng: SeededRng,
    next_op: u64,
    pending: Vec<Pending>,
    acked_adds: Vec<(String, String)>,
    resp: Vec<Option<redis::aio::MultiplexedConnection>>,
    last_retry: Instant,
}

/// Runs a client until it is told to drain and has drained; returns the operations it
/// could not get acknowledged.
pub async fn run_client(config: ClientConfig) -> Result<usize, ClientError> {
    let history =
        HistoryWriter::create(&config.history).map_err(|source| ClientError::History {
            path: config.history.clone(),
            source,
        })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .connect_timeout(Duration::from_millis(config.timeout_ms))
        .pool_max_idle_per_host(4)
        .build()?;
    let (tell, mode) = watch::channel(Mode::Run);
    let workers = config.workers.max(1);
    let shared = Arc::new(Shared {
        config,
        http,
        history: Mutex::new(history),
        mode,
        paused: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let mut tasks = Vec::new();
    for w in 0..workers {
        let worker = Worker {
            name: format!("{}w{w}", shared.config.name),
            shared: shared.clone(),
            rng: SeededRng::new(shared.config.seed.wrapping_mul(31).wrapping_add(w as u64)),
            next_op: 0,
            pending: Vec::new(),
            acked_adds: Vec::new(),
            resp: vec![None; shared.config.nodes.len()],
            last_retry: Instant::now(),
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "pause" => {
                let _ = tell.send(Mode::Pause);
                while shared.paused.load(Ordering::SeqCst) + shared.done.load(Ordering::SeqCst)
                    < workers
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                println!("paused");
            }
            "resume" => {
                let _ = tell.send(Mode::Run);
                println!("resumed");
            }
            "drain" => {
                let _ = tell.send(Mode::Drain);
                break;
            }
            _ => {}
        }
    }
    // Standard input closed or `drain`: drain and stop.
    let _ = tell.send(Mode::Drain);
    let mut left = 0;
    for task in tasks {
        left += task.await.unwrap_or(0);
    }
    println!("drained {left}");
    Ok(left)
}

impl Worker {
    async fn run(mut self) -> usize {
        let mut mode_rx = self.shared.mode.clone();
        loop {
            let mode = *mode_rx.borrow_and_update();
            match mode {
                Mode::Run => {
                    self.step().await;
                    tokio::time::sleep(Duration::from_millis(self.shared.config.think_ms)).await;
                }
                Mode::Pause => {
                    self.shared.paused.fetch_add(1, Ordering::SeqCst);
                    let _ = mode_rx.changed().await;
                    self.shared.paused.fetch_sub(1, Ordering::SeqCst);
                }
                Mode::Drain => break,
            }
        }
        let left = self.drain().await;
        self.shared.done.fetch_add(1, Ordering::SeqCst);
        left
    }

    fn node(&mut self) -> usize {
        let n = self.shared.config.nodes.len();
        if self.rng.below(2) == 0 {
            self.shared.config.home % n
        } else {
            self.rng.below(n as u64) as usize
        }
    }

    fn other_node(&mut self, not: usize) -> usize {
        let n = self.shared.config.nodes.len();
        if n < 2 {
            return not;
        }
        (not + 1 + self.rng.below(n as u64 - 1) as usize) % n
    }

    /// Draws and performs one operation (with its immediate retry); first, at most once
    /// a second, retries what is pending, so a retry stays well within the writer window
    /// of its key (a retry more than `WRITER_WINDOW` seqs late is not counted: the
    /// contract producers must keep).
    async fn step(&mut self) {
        if !self.pending.is_empty() && self.last_retry.elapsed() > Duration::from_secs(1) {
            self.last_retry = Instant::now();
            self.retry_pending().await;
        }
        self.next_op += 1;
        let op_id = self.next_op;
        let unique = format!("{}-{op_id}", self.name);
        let roll = self.rng.below(100);
        let resp = self.rng.below(100) < 30;
        let (op, proto) = match roll {
            0..=39 => {
                let by = 1 + self.rng.below(5) as i64;
                if resp {
                    let key = format!("r{}", self.rng.below(2));
                    (Op::Incr { key, by, id: None }, Proto::Resp)
                } else {
                    let key = format!("k{}", self.rng.below(4));
                    let id = (!self.shared.config.anonymous_retries).then(|| ProducerId {
                        writer: self.name.clone(),
                        seq: op_id,
                    });
                    (Op::Incr { key, by, id }, Proto::Http)
                }
            }
            40..=56 => {
                let key = format!("s{}", self.rng.below(2));
                (
                    Op::Add {
                        key,
                        member: unique,
                    },
                    proto_of(resp),
                )
            }
            57..=61 if !self.acked_adds.is_empty() => {
                let i = self.rng.below(self.acked_adds.len() as u64) as usize;
                let (key, member) = self.acked_adds.swap_remove(i);
                (Op::Remove { key, member }, proto_of(resp))
            }
            57..=74 => (
                Op::PfAdd {
                    key: "h0".to_string(),
                    member: unique,
                },
                proto_of(resp),
            ),
            75..=87 => {
                let key = format!("m{}", self.rng.below(2));
                let value = self.rng.below(1_000_000_000) as i64;
                (Op::Max { key, value }, Proto::Http)
            }
            _ => (
                Op::Set {
                    key: "g0".to_string(),
                    value: unique,
                },
                proto_of(resp),
            ),
        };
        let (consistency, quorum) = if proto == Proto::Resp {
            // RESP cannot choose yet: the node's defaults.
            ("quorum", "sloppy")
        } else {
            let c = match self.rng.below(10) {
                0..=1 => "one",
                2..=7 => "quorum",
                _ => "all",
            };
            (
                c,
                if self.rng.below(4) == 0 {
                    "strict"
                } else {
                    "sloppy"
                },
            )
        };
        let node = self.node();
        let ok = self
            .attempt(op_id, 1, node, proto, consistency, quorum, &op)
            .await;
        if ok || !retriable(&op, proto) {
            return;
        }
        let other = self.other_node(node);
        let ok = self
            .attempt(op_id, 2, other, Proto::Http, consistency, quorum, &op)
            .await;
        if !ok {
            self.pending.push(Pending {
                op_id,
                op,
                attempts: 2,
            });
        }
    }

    /// Retries every pending operation once through a random node (quorum, sloppy).
    async fn retry_pending(&mut self) {
        let mut left = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            p.attempts += 1;
            let node = self.rng.below(self.shared.config.nodes.len() as u64) as usize;
            let ok = self
                .attempt(
                    p.op_id,
                    p.attempts,
                    node,
                    Proto::Http,
                    "quorum",
                    "sloppy",
                    &p.op,
                )
                .await;
            if !ok {
                left.push(p);
            }
        }
        self.pending = left;
    }

    /// Retries pending operations until each is acknowledged or the deadline passes.
    /// Returns how many are left.
    async fn drain(&mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(self.shared.config.drain_secs);
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.retry_pending().await;
            if !self.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.pending.len()
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &mut self,
        op_id: u64,
        attempt: u32,
        node: usize,
        proto: Proto,
        consistency: &str,
        quorum: &str,
        op: &Op,
    ) -> bool {
        self.shared.record(Record::Invoke {
            t: now_us(),
            client: self.name.clone(),
            op_id,
            attempt,
            node,
            proto,
            consistency: consistency.to_string(),
            quorum: quorum.to_string(),
            op: op.clone(),
        });
        let outcome = match proto {
            Proto::Http => self.http(node, consistency, quorum, op).await,
            Proto::Resp => self.resp(node, op).await,
        };
        let (client, t) = (self.name.clone(), now_us());
        let ok = matches!(outcome, Outcome::Ok);
        if let (true, Op::Add { key, member }) = (ok, op) {
            // An acknowledged add: a member a later remove may name.
            self.acked_adds.push((key.clone(), member.clone()));
        }
        self.shared.record(match outcome {
            Outcome::Ok => Record::Ok {
                t,
                client,
                op_id,
                attempt,
            },
            Outcome::Fail(status, error) => Record::Fail {
                t,
                client,
                op_id,
                attempt,
                status,
                error,
            },
            Outcome::Timeout => Record::Timeout {
                t,
                client,
                op_id,
                attempt,
            },
        });
        ok
    }

    async fn http(&self, node: usize, consistency: &str, quorum: &str, op: &Op) -> Outcome {
        let body = match op {
            Op::Incr { key, by, id } => match id {
                Some(id) => json!({"key": key, "op": "incr", "by": by, "id": id}),
                None => json!({"key": key, "op": "incr", "by": by}),
            },
            Op::Add { key, member } => json!({"key": key, "op": "add", "members": [member]}),
            Op::Remove { key, member } => {
                json!({"key": key, "op": "remove", "members": [member]})
            }
            Op::PfAdd { key, member } => json!({"key": key, "op": "pfadd", "members": [member]}),
            Op::Max { key, value } => json!({"key": key, "op": "max", "value": value}),
            Op::Set { key, value } => json!({"key": key, "op": "set", "value": value}),
        };
        let url = format!(
            "{}/v1/views/{}/update?consistency={consistency}&quorum={quorum}",
            self.shared.config.nodes[node].http,
            op.view()
        );
        match self.shared.http.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                // A 200 may still say the update was not counted: a retry that came more
                // than the writer window late (`stale`), or an event for a dropped epoch.
                let answer: serde_json::Value = response.json().await.unwrap_or_default();
                let refused = ["stale", "late"]
                    .iter()
                    .filter(|f| answer[**f].as_u64().unwrap_or(0) > 0)
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>();
                if refused.is_empty() {
                    Outcome::Ok
                } else {
                    Outcome::Fail(200, format!("not counted: {}", refused.join(", ")))
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                Outcome::Fail(status, text.chars().take(200).collect())
            }
            Err(e) if e.is_timeout() => Outcome::Timeout,
            Err(e) => Outcome::Fail(0, e.to_string()),
        }
    }

    async fn resp(&mut self, node: usize, op: &Op) -> Outcome {
        let timeout = Duration::from_millis(self.shared.config.timeout_ms);
        let command = match op {
            Op::Incr { key, by, .. } => {
                let mut c = redis::cmd("INCRBY");
                c.arg(format!("{}:{key}", op.view())).arg(*by);
                c
            }
            Op::Add { key, member } => {
                let mut c = redis::cmd("SADD");
                c.arg(format!("{}:{key}", op.view())).arg(member);
                c
            }
            Op::Remove { key, member } => {
                let mut c = redis::cmd("SREM");
                c.arg(format!("{}:{key}", op.view())).arg(member);
                c
            }
            Op::PfAdd { key, member } => {
                let mut c = redis::cmd("PFADD");
                c.arg(format!("{}:{key}", op.view())).arg(member);
                c
            }
            Op::Set { key, value } => {
                let mut c = redis::cmd("SET");
                c.arg(format!("{}:{key}", op.view())).arg(value);
                c
            }
            Op::Max { .. } => return Outcome::Fail(0, "max has no RESP command".to_string()),
        };
        let connection = match self.resp[node].clone() {
            Some(c) => c,
            None => {
                let addr = format!("redis://{}/", self.shared.config.nodes[node].resp);
                let client = match redis::Client::open(addr) {
                    Ok(c) => c,
                    Err(e) => return Outcome::Fail(0, e.to_string()),
                };
                match tokio::time::timeout(timeout, client.get_multiplexed_async_connection()).await
                {
                    Ok(Ok(c)) => {
                        self.resp[node] = Some(c.clone());
                        c
                    }
                    Ok(Err(e)) => return Outcome::Fail(0, e.to_string()),
                    Err(_) => return Outcome::Fail(0, "connect timed out".to_string()),
                }
            }
        };
        let mut connection = connection;
        let result = tokio::time::timeout(
            timeout,
            command.query_async::<redis::Value>(&mut connection),
        )
        .await;
        match result {
            Ok(Ok(_)) => Outcome::Ok,
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    self.resp[node] = None;
                }
                Outcome::Fail(0, e.to_string())
            }
            Err(_) => {
                self.resp[node] = None;
                Outcome::Timeout
            }
        }
    }
}

fn proto_of(resp: bool) -> Proto {
    if resp {
        Proto::Resp
    } else {
        Proto::Http
    }
}

/// Whether an operation may be retried after an attempt of unknown outcome.
fn retriable(op: &Op, proto: Proto) -> bool {
    match op {
        Op::Incr { .. } => proto == Proto::Http,
        Op::Add { .. } | Op::PfAdd { .. } | Op::Max { .. } => true,
        Op::Remove { .. } | Op::Set { .. } => false,
    }
}
