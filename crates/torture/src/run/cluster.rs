//! The cluster under test as the controller drives it: its node processes, its network
//! and the faults in place, each fault recorded in the history with the reachability it
//! implies; convergence checks and reads of every node's own copy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{harness, rows, RunError};
use crate::checker::normalise;
use crate::history::{now_us, HistoryWriter, Record};
use crate::net::{LinkFaults, Network};
use crate::node::{NodeProcess, CLUSTER_PORT};
use crate::scenario::{NodeIx, Step};

/// The cluster under test and what has been done to it.
pub(super) struct Cluster {
    // Declared first so nodes (and their tmpfs mounts) go before the network.
    pub(super) nodes: Vec<NodeProcess>,
    pub(super) net: Network,
    pub(super) links: LinkFaults,
    pub(super) http: reqwest::Client,
    pub(super) controller: HistoryWriter,
    pub(super) cycle: usize,
}

impl Cluster {
    pub(super) fn alive(&self) -> Vec<bool> {
        self.nodes
            .iter()
            .map(|n| n.is_running() && !n.is_paused())
            .collect()
    }

    pub(super) fn record(&mut self, record: &Record) -> Result<(), RunError> {
        self.controller
            .write(record)
            .map_err(|e| harness(format!("controller history: {e}")))
    }

    /// Records the fault state after `step` (a [`Step`], or a part of one), as it is.
    fn record_fault(&mut self, step: impl std::fmt::Display) -> Result<(), RunError> {
        let alive = self.alive();
        self.record_state(&step.to_string(), alive)
    }

    /// Records the fault state `step` leaves: the current links and `alive`. A step that
    /// lifts a fault records the state it will leave before it acts, so the history never
    /// claims a fault that is already gone, only (briefly) health that is not yet back.
    fn record_state(&mut self, step: &str, alive: Vec<bool>) -> Result<(), RunError> {
        let n = self.nodes.len();
        let reach = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        if !alive[i] || !alive[j] {
                            Some(false)
                        } else {
                            self.links.reach(i, j)
                        }
                    })
                    .collect()
            })
            .collect();
        let record = Record::Fault {
            t: now_us(),
            cycle: self.cycle,
            step: step.to_string(),
            reach,
            alive,
        };
        self.record(&record)
    }

    async fn healthy(&self, i: NodeIx) -> bool {
        let url = format!("{}/health", self.nodes[i].base());
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }

    /// Waits until node `i` answers `/health` and every other running node sees it up.
    pub(super) async fn wait_up(&self, i: NodeIx, within: Duration) -> Result<(), RunError> {
        let deadline = Instant::now() + within;
        while !self.healthy(i).await {
            if Instant::now() > deadline {
                return Err(harness(format!(
                    "node {} did not answer /health within {within:?} (log: {})",
                    letter(i),
                    self.nodes[i].log_path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let addr = format!("{}:{CLUSTER_PORT}", self.net.node_addr(i));
        for j in 0..self.nodes.len() {
            if j == i || !self.nodes[j].is_running() || self.nodes[j].is_paused() {
                continue;
            }
            loop {
                let url = format!("{}/v1/cluster", self.nodes[j].base());
                let seen = match self.http.get(&url).send().await {
                    Ok(r) => r.json::<serde_json::Value>().await.ok().is_some_and(|v| {
                        v["nodes"].as_array().is_some_and(|nodes| {
                            nodes
                                .iter()
                                .any(|n| n["addr"] == addr.as_str() && n["state"] == "up")
                        })
                    }),
                    Err(_) => false,
                };
                if seen {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(harness(format!(
                        "node {} did not see {} up within {within:?}",
                        letter(j),
                        letter(i)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    pub(super) async fn apply(&mut self, step: &Step) -> Result<(), RunError> {
        let wait_up = Duration::from_secs(60);
        match step {
            Step::Kill(n) => self.nodes[*n].kill(),
            Step::Restart(n) => {
                let skew = self.nodes[*n].skew();
                self.nodes[*n].restart(skew)?;
                self.record_fault(step)?;
                return self.wait_up(*n, wait_up).await;
            }
            Step::Pause(n) => self.nodes[*n].pause()?,
            Step::Resume(n) => {
                let mut alive = self.alive();
                alive[*n] = self.nodes[*n].is_running();
                self.record_state(&step.to_string(), alive)?;
                return self.nodes[*n].resume().map_err(RunError::from);
            }
            Step::Partition(groups) => {
                let mut links = self.links.clone();
                links.partition(groups);
                self.set_links(links)?;
            }
            Step::Bridge(x) => {
                let n = self.nodes.len();
                let others: Vec<Vec<NodeIx>> = (0..n).filter(|i| i != x).map(|i| vec![i]).collect();
                let mut links = self.links.clone();
                links.partition(&others);
                self.set_links(links)?;
            }
            Step::Drop(x, y) => {
                let mut links = self.links.clone();
                links.drops.insert((*x, *y));
                self.set_links(links)?;
            }
            Step::Loss(x, p) => {
                let mut links = self.links.clone();
                links.loss.insert(*x, *p);
                self.set_links(links)?;
            }
            Step::Cut(x) => {
                let mut links = self.links.clone();
                links.cut.insert(*x);
                self.set_links(links)?;
            }
            Step::Heal => {
                self.links = LinkFaults::default();
                self.record_fault(step)?;
                return Ok(self.net.apply(&LinkFaults::default())?);
            }
            Step::FillDisk(n) => self.nodes[*n].fill_disk()?,
            Step::FreeDisk(n) => {
                self.record_fault(step)?;
                self.nodes[*n].free_disk();
                return Ok(());
            }
            Step::Skew(n, secs) => {
                self.nodes[*n].restart(Some(*secs))?;
                self.record_fault(step)?;
                return self.wait_up(*n, wait_up).await;
            }
            Step::Unskew(n) => {
                self.nodes[*n].restart(None)?;
                self.record_fault(step)?;
                return self.wait_up(*n, wait_up).await;
            }
            Step::RollingRestart => {
                for n in 0..self.nodes.len() {
                    let skew = self.nodes[n].skew();
                    self.nodes[n].kill();
                    self.record_fault(format!("{step}: {}", Step::Kill(n)))?;
                    self.nodes[n].restart(skew)?;
                    self.record_fault(format!("{step}: {}", Step::Restart(n)))?;
                    self.wait_up(n, wait_up).await?;
                }
                return Ok(());
            }
            Step::Wait(d) => {
                tokio::time::sleep(*d).await;
                return Ok(());
            }
            Step::AssertConverged => return Ok(()),
        }
        self.record_fault(step)
    }

    fn set_links(&mut self, links: LinkFaults) -> Result<(), RunError> {
        self.net.apply(&links)?;
        self.links = links;
        Ok(())
    }

    /// Every node's `local` answer for every workload row, by row.
    async fn local_answers(&self) -> BTreeMap<(String, String), Vec<(NodeIx, String)>> {
        let mut answers: BTreeMap<(String, String), Vec<(NodeIx, String)>> = BTreeMap::new();
        for (view, key) in rows() {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() || self.nodes[i].is_paused() {
                    continue;
                }
                let value = self.read(i, view, &key, "local").await;
                let shown = value.map_or_else(|e| format!("error: {e}"), |v| normalise(&v));
                answers
                    .entry((view.to_string(), key.clone()))
                    .or_default()
                    .push((i, shown));
            }
        }
        answers
    }

    pub(super) async fn read(
        &self,
        i: NodeIx,
        view: &str,
        key: &str,
        consistency: &str,
    ) -> Result<serde_json::Value, String> {
        let url = format!(
            "{}/v1/views/{view}/get?key={key}&consistency={consistency}",
            self.nodes[i].base()
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status} {body}"));
        }
        Ok(body["value"].clone())
    }

    /// Waits until every running node's `local` answers agree; records the outcome.
    pub(super) async fn converge(&mut self, within: Duration) -> Result<bool, RunError> {
        let started = Instant::now();
        loop {
            let answers = self.local_answers().await;
            let differing: Vec<String> = answers
                .iter()
                .filter(|(_, a)| {
                    a.iter().any(|(_, v)| v.starts_with("error"))
                        || a.iter().any(|(_, v)| *v != a[0].1)
                })
                .map(|((view, key), a)| {
                    let shown: Vec<String> = a
                        .iter()
                        .map(|(i, v)| {
                            format!("{}={}", letter(*i), v.chars().take(80).collect::<String>())
                        })
                        .collect();
                    format!("{view}/{key}: {}", shown.join(" "))
                })
                .collect();
            if differing.is_empty() {
                let record = Record::Converged {
                    t: now_us(),
                    cycle: self.cycle,
                    after_ms: started.elapsed().as_millis() as u64,
                };
                self.record(&record)?;
                return Ok(true);
            }
            if started.elapsed() > within {
                let record = Record::NotConverged {
                    t: now_us(),
                    cycle: self.cycle,
                    waited_ms: started.elapsed().as_millis() as u64,
                    detail: differing.into_iter().take(3).collect::<Vec<_>>().join("; "),
                };
                self.record(&record)?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lifts every fault: network healed, nodes resumed or restarted with true clocks,
    /// disks freed.
    pub(super) async fn heal_all(&mut self) -> Result<(), RunError> {
        if !self.links.is_healthy() {
            self.apply(&Step::Heal).await?;
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].is_paused() {
                self.apply(&Step::Resume(n)).await?;
            }
            if self.nodes[n].disk_full() {
                self.apply(&Step::FreeDisk(n)).await?;
            }
            if self.nodes[n].skew().is_some() {
                self.apply(&Step::Unskew(n)).await?;
            } else if !self.nodes[n].is_running() {
                self.apply(&Step::Restart(n)).await?;
            }
        }
        Ok(())
    }
}

pub(super) fn letter(n: NodeIx) -> char {
    char::from(b'a' + (n % 26) as u8)
}
