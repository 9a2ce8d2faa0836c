//! A simulated client: sequential, calling the coordinators through the
//! [`Coordinator`] door (the front ends are not part of the simulation), retrying what
//! failed with the same producer id, and recording the fault suite's history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use speedlayer_api::{ApplyKind, Consistency, Coordinator, QuorumMode, Update, WriteOptions};
use speedlayer_core::{Op, Outcome, UpdateId};
use speedlayer_torture::history::{now_us, Op as HOp, ProducerId, Proto, Record};
use speedlayer_torture::scenario::SeededRng;

use crate::run::{key, record, History, COUNTER, HLL, MAX, SET};

/// A sequential client calling the coordinators directly (the front ends are not part
/// of the simulation).
pub(crate) struct SimClient {
    pub(crate) name: String,
    pub(crate) nodes: Vec<Arc<dyn Coordinator>>,
    pub(crate) history: History,
    pub(crate) rng: SeededRng,
    pub(crate) anonymous: bool,
    pub(crate) pending: Vec<(u64, HOp, u32)>,
}

impl SimClient {
    /// Runs `ops` operations, then drains; returns how many stayed unacknowledged.
    pub(crate) async fn run(mut self, ops: usize) -> usize {
        for op_id in 1..=ops as u64 {
            let op = match self.rng.below(10) {
                0..=4 => HOp::Incr {
                    key: format!("k{}", self.rng.below(3)),
                    by: 1 + self.rng.below(4) as i64,
                    id: (!self.anonymous).then(|| ProducerId {
                        writer: self.name.clone(),
                        seq: op_id,
                    }),
                },
                5..=6 => HOp::Add {
                    key: "s0".into(),
                    member: format!("{}-{op_id}", self.name),
                },
                7..=8 => HOp::PfAdd {
                    key: "h0".into(),
                    member: format!("{}-{op_id}", self.name),
                },
                _ => HOp::Max {
                    key: "m0".into(),
                    value: self.rng.below(1_000_000) as i64,
                },
            };
            let (consistency, quorum) = match self.rng.below(6) {
                0 => (Consistency::One, QuorumMode::Sloppy),
                1 => (Consistency::All, QuorumMode::Sloppy),
                2 => (Consistency::Quorum, QuorumMode::Strict),
                _ => (Consistency::Quorum, QuorumMode::Sloppy),
            };
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            if !self.attempt(op_id, 1, node, consistency, quorum, &op).await {
                self.pending.push((op_id, op, 1));
            }
            // Retry what is pending now and then, within the writer window.
            if op_id % 10 == 0 {
                self.retry_pending().await;
            }
        }
        // Drain: the network is healed by now (or soon); retry until acknowledged.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.retry_pending().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pending.len()
    }

    async fn retry_pending(&mut self) {
        let mut left = Vec::new();
        for (op_id, op, attempts) in std::mem::take(&mut self.pending) {
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            if !self
                .attempt(
                    op_id,
                    attempts + 1,
                    node,
                    Consistency::Quorum,
                    QuorumMode::Sloppy,
                    &op,
                )
                .await
            {
                left.push((op_id, op, attempts + 1));
            }
        }
        self.pending = left;
    }

    async fn attempt(
        &mut self,
        op_id: u64,
        attempt: u32,
        node: usize,
        consistency: Consistency,
        quorum: QuorumMode,
        op: &HOp,
    ) -> bool {
        let converted = to_update(op);
        record(
            &self.history,
            Record::Invoke {
                t: now_us(),
                client: self.name.clone(),
                op_id,
                attempt,
                node,
                proto: Proto::Http,
                consistency: consistency.to_string(),
                quorum: match quorum {
                    QuorumMode::Strict => "strict".into(),
                    QuorumMode::Sloppy => "sloppy".into(),
                },
                op: op.clone(),
            },
        );
        let options = WriteOptions {
            consistency,
            quorum,
        };
        let result = match converted {
            Ok((view, update)) => self.nodes[node]
                .apply(view, vec![update], options, ApplyKind::Plain)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let (t, client) = (now_us(), self.name.clone());
        let outcome = match result {
            Ok(results) => match results.first() {
                Some(Ok(applied))
                    if matches!(applied.outcome, Outcome::Applied | Outcome::Duplicate) =>
                {
                    Ok(())
                }
                Some(Ok(applied)) => Err(format!("not counted: {:?}", applied.outcome)),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("no result".into()),
            },
            Err(e) => Err(e),
        };
        let ok = outcome.is_ok();
        record(
            &self.history,
            match outcome {
                Ok(()) => Record::Ok {
                    t,
                    client,
                    op_id,
                    attempt,
                },
                Err(error) => Record::Fail {
                    t,
                    client,
                    op_id,
                    attempt,
                    status: 0,
                    error,
                },
            },
        );
        ok
    }
}

fn to_update(op: &HOp) -> Result<(&'static str, Update), String> {
    let (view, key_text, op, id) = match op {
        HOp::Incr { key, by, id } => (
            COUNTER,
            key,
            Op::Incr(*by),
            id.as_ref().map(|id| UpdateId {
                writer: id.writer.clone(),
                seq: id.seq,
            }),
        ),
        HOp::Add { key, member } => (SET, key, Op::Add(vec![member.clone().into_bytes()]), None),
        HOp::Remove { key, member } => (
            SET,
            key,
            Op::Remove(vec![member.clone().into_bytes()]),
            None,
        ),
        HOp::PfAdd { key, member } => {
            (HLL, key, Op::PfAdd(vec![member.clone().into_bytes()]), None)
        }
        HOp::Max { key, value } => (MAX, key, Op::Max(*value), None),
        HOp::Set { key, value } => (COUNTER, key, Op::Set(value.clone().into_bytes()), None),
    };
    Ok((
        view,
        Update {
            key: key(key_text)?,
            op,
            ts_us: None,
            id,
        },
    ))
}
