//! The checker: reads a history and says, per property, whether the cluster kept its
//! promises, and measures what the faults cost.
//!
//! An attempt that failed or timed out may or may not have been applied, so every
//! property is a bound between what was acknowledged and what was invoked:
//! - **counters exact**: per key, the value lies between the sum of the logical
//!   increments acknowledged at least once and the sum of all logical increments invoked;
//!   a retried increment is one logical increment (below: lost, above: double counted).
//!   The workload retries unacknowledged increments with their producer id until they
//!   are acknowledged, so for those the two bounds meet and the value must be exact.
//! - **set adds kept**: every member whose add was acknowledged and that nobody tried to
//!   remove is present; no member is present that nobody added.
//! - **distinct counts within bound**: the estimate lies within the HyperLogLog's error
//!   bound of the acknowledged and the invoked distinct members.
//! - **max exact**: the value lies between the largest acknowledged and the largest
//!   invoked offer.
//! - **register written**: the value is one some client set.
//! - **strict writes refused**: no strict write was acknowledged while, for its whole
//!   duration, its coordinator could reach fewer live replicas than its consistency
//!   needs (checked when every node replicates every key).
//! - **converged**: after every heal, every node's `local` answers agreed within the
//!   bound, and the final `local` answers of every node agree with each other.
//!
//! Pure: records in, a [`Report`] out.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::history::{Op, Record};

mod properties;

use properties::{
    check_convergence, check_counters, check_hll, check_max, check_registers, check_sets,
    check_strict, members,
};

/// Relative error allowed for a distinct count: three standard errors of a 2^14-register
/// HyperLogLog (1.04/128 = 0.81%), rounded up.
pub const HLL_RELATIVE_BOUND: f64 = 0.025;

/// One property's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The property.
    pub property: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was checked, or what broke it (first few cases).
    pub detail: String,
}

/// Client-visible cost of one kind of fault.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultCost {
    /// Cycles of this kind.
    pub cycles: usize,
    /// Attempts invoked during them.
    pub attempts: usize,
    /// Of which failed or timed out.
    pub errors: usize,
    /// Convergence times after the heal (ms).
    pub converged_ms: Vec<u64>,
}

/// The checker's answer.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One verdict per property.
    pub verdicts: Vec<Verdict>,
    /// Logical operations, attempts, acknowledged operations.
    pub totals: (usize, usize, usize),
    /// Per fault kind (the first word of the cycle's first step).
    pub by_fault: BTreeMap<String, FaultCost>,
    /// The slowest acknowledged write whose attempt overlapped a paused node (ms).
    pub slowest_write_while_hung_ms: Option<u64>,
    /// The same, by consistency, of the attempts sent to another node than the paused
    /// one (what a hung replica costs a write it is not coordinating; the paused node's
    /// own clients wait for it to resume whatever the consistency).
    pub slowest_write_past_hung_ms: BTreeMap<String, u64>,
    /// Convergence times of every cycle (ms), sorted.
    pub converged_ms: Vec<u64>,
}

impl Report {
    /// Whether every property held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }

    /// The verdict of `property`, if checked.
    pub fn verdict(&self, property: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.property == property)
    }
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ops, attempts, acked) = self.totals;
        writeln!(
            f,
            "{ops} operations, {attempts} attempts, {acked} acknowledged"
        )?;
        for v in &self.verdicts {
            let mark = if v.ok { "PASS" } else { "FAIL" };
            writeln!(f, "  {mark} {:<24} {}", v.property, v.detail)?;
        }
        if !self.by_fault.is_empty() {
            writeln!(
                f,
                "  {:<12} {:>6} {:>9} {:>8} {:>11} {:>11}",
                "fault", "cycles", "attempts", "errors", "conv p50", "conv p99"
            )?;
            for (kind, cost) in &self.by_fault {
                let mut conv = cost.converged_ms.clone();
                conv.sort_unstable();
                let ms = |q| quantile(&conv, q).map_or("-".to_string(), |v| format!("{v} ms"));
                let rate = if cost.attempts == 0 {
                    0.0
                } else {
                    100.0 * cost.errors as f64 / cost.attempts as f64
                };
                writeln!(
                    f,
                    "  {kind:<12} {:>6} {:>9} {:>7.1}% {:>11} {:>11}",
                    cost.cycles,
                    cost.attempts,
                    rate,
                    ms(0.5),
                    ms(0.99)
                )?;
            }
        }
        let ms = |q| quantile(&self.converged_ms, q).map_or("-".to_string(), |v| format!("{v} ms"));
        writeln!(
            f,
            "  convergence after heal: p50 {}, p99 {}, max {}",
            ms(0.5),
            ms(0.99),
            ms(1.0)
        )?;
        if let Some(ms) = self.slowest_write_while_hung_ms {
            writeln!(f, "  slowest acknowledged write while a peer hung: {ms} ms")?;
        }
        if !self.slowest_write_past_hung_ms.is_empty() {
            let by: Vec<String> = self
                .slowest_write_past_hung_ms
                .iter()
                .map(|(consistency, ms)| format!("{consistency} {ms} ms"))
                .collect();
            writeln!(
                f,
                "  slowest acknowledged write through another node while a peer hung: {}",
                by.join(", ")
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Attempt {
    invoked: u64,
    ended: Option<u64>,
    acked: bool,
    node: usize,
    consistency: String,
    quorum: String,
}

#[derive(Clone, Debug)]
struct Logical {
    op: Op,
    attempts: BTreeMap<u32, Attempt>,
}

impl Logical {
    fn acked(&self) -> bool {
        self.attempts.values().any(|a| a.acked)
    }
}

/// Most cases a verdict lists.
const SHOWN: usize = 5;

fn verdict(property: &'static str, problems: Vec<String>, checked: String) -> Verdict {
    let ok = problems.is_empty();
    let detail = if ok {
        checked
    } else {
        let more = problems.len().saturating_sub(SHOWN);
        let mut shown: Vec<String> = problems.into_iter().take(SHOWN).collect();
        if more > 0 {
            shown.push(format!("and {more} more"));
        }
        shown.join("; ")
    };
    Verdict {
        property,
        ok,
        detail,
    }
}

/// One final answer: (node, consistency, value).
type Answer<'a> = (usize, &'a str, &'a serde_json::Value);

struct Finals<'a> {
    by_row: BTreeMap<(&'a str, &'a str), Vec<Answer<'a>>>,
}

impl<'a> Finals<'a> {
    fn of(records: &'a [Record]) -> Finals<'a> {
        let mut by_row: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for r in records {
            if let Record::Final {
                view,
                key,
                node,
                consistency,
                value,
                ..
            } = r
            {
                by_row
                    .entry((view.as_str(), key.as_str()))
                    .or_default()
                    .push((*node, consistency.as_str(), value));
            }
        }
        Finals { by_row }
    }

    fn rows<'s>(&'s self, view: &'s str) -> impl Iterator<Item = (&'a str, &'s [Answer<'a>])> + 's {
        self.by_row
            .iter()
            .filter(move |((v, _), _)| *v == view)
            .map(|((_, k), answers)| (*k, answers.as_slice()))
    }
}

fn who(node: usize, consistency: &str) -> String {
    format!(
        "{consistency} read via {}",
        char::from(b'a' + (node % 26) as u8)
    )
}

/// Checks a history (in any order; it is sorted by time first).
pub fn check(records: &[Record]) -> Report {
    let mut records = records.to_vec();
    records.sort_by_key(Record::t);
    let records = &records[..];
    let mut ops: HashMap<(String, u64), Logical> = HashMap::new();
    let mut attempts = 0;
    let mut setup = (0usize, 0usize);
    for r in records {
        match r {
            Record::Invoke {
                t,
                client,
                op_id,
                attempt,
                node,
                consistency,
                quorum,
                op,
                ..
            } => {
                attempts += 1;
                ops.entry((client.clone(), *op_id))
                    .or_insert_with(|| Logical {
                        op: op.clone(),
                        attempts: BTreeMap::new(),
                    })
                    .attempts
                    .insert(
                        *attempt,
                        Attempt {
                            invoked: *t,
                            ended: None,
                            acked: false,
                            node: *node,
                            consistency: consistency.clone(),
                            quorum: quorum.clone(),
                        },
                    );
            }
            Record::Ok {
                t,
                client,
                op_id,
                attempt,
            }
            | Record::Fail {
                t,
                client,
                op_id,
                attempt,
                ..
            }
            | Record::Timeout {
                t,
                client,
                op_id,
                attempt,
            } => {
                if let Some(a) = ops
                    .get_mut(&(client.clone(), *op_id))
                    .and_then(|l| l.attempts.get_mut(attempt))
                {
                    a.acked = matches!(r, Record::Ok { .. });
                    a.ended = Some(*t);
                }
            }
            Record::Setup {
                nodes, replicas, ..
            } => setup = (*nodes, *replicas),
            _ => {}
        }
    }
    let acked_ops = ops.values().filter(|l| l.acked()).count();
    let finals = Finals::of(records);
    let mut report = Report {
        totals: (ops.len(), attempts, acked_ops),
        ..Report::default()
    };
    report.verdicts.push(check_counters(&ops, &finals));
    report.verdicts.push(check_sets(&ops, &finals));
    report.verdicts.push(check_hll(&ops, &finals));
    report.verdicts.push(check_max(&ops, &finals));
    report.verdicts.push(check_registers(&ops, &finals));
    report.verdicts.push(check_strict(&ops, records, setup));
    report.verdicts.push(check_convergence(records, &finals));
    measure(&mut report, &ops, records);
    report
}

/// A value in a form where equal states compare equal (set members sorted).
pub fn normalise(value: &serde_json::Value) -> String {
    match members(value) {
        Some(set) => format!("{set:?}"),
        None => value.to_string(),
    }
}

fn fault_word(step: &str) -> String {
    step.split(['(', ' ', ':'])
        .next()
        .unwrap_or(step)
        .to_string()
}

fn measure(report: &mut Report, ops: &HashMap<(String, u64), Logical>, records: &[Record]) {
    // Cycle windows: from the cycle's first fault record to its convergence record.
    let mut windows: BTreeMap<usize, (u64, u64, String)> = BTreeMap::new();
    // (paused from, resumed at, the paused node's index).
    let mut hung: Vec<(u64, u64, Option<usize>)> = Vec::new();
    let mut paused_since: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        match r {
            Record::Fault { t, cycle, step, .. } => {
                windows
                    .entry(*cycle)
                    .or_insert_with(|| (*t, u64::MAX, fault_word(step)));
                if let Some(node) = step.strip_prefix("Pause(") {
                    paused_since.insert(node.to_string(), *t);
                } else if let Some(node) = step.strip_prefix("Resume(") {
                    if let Some(from) = paused_since.remove(node) {
                        let index = node
                            .trim_end_matches(')')
                            .chars()
                            .next()
                            .filter(char::is_ascii_lowercase)
                            .map(|c| usize::from(c as u8 - b'a'));
                        hung.push((from, *t, index));
                    }
                }
            }
            Record::Converged { t, cycle, after_ms } => {
                if let Some(w) = windows.get_mut(cycle) {
                    w.1 = *t;
                    report
                        .by_fault
                        .entry(w.2.clone())
                        .or_default()
                        .converged_ms
                        .push(*after_ms);
                }
                report.converged_ms.push(*after_ms);
            }
            Record::NotConverged { t, cycle, .. } => {
                if let Some(w) = windows.get_mut(cycle) {
                    w.1 = *t;
                }
            }
            _ => {}
        }
    }
    report.converged_ms.sort_unstable();
    for (from, to, kind) in windows.values() {
        let cost = report.by_fault.entry(kind.clone()).or_default();
        cost.cycles += 1;
        for l in ops.values() {
            for a in l.attempts.values() {
                if a.invoked >= *from && a.invoked <= *to {
                    cost.attempts += 1;
                    if !a.acked {
                        cost.errors += 1;
                    }
                }
            }
        }
    }
    for l in ops.values() {
        for a in l.attempts.values() {
            let (Some(end), true) = (a.ended, a.acked) else {
                continue;
            };
            let overlapping = hung
                .iter()
                .filter(|(from, to, _)| a.invoked < *to && end > *from);
            let mut any = false;
            let mut past = false;
            for (_, _, paused) in overlapping {
                any = true;
                past |= *paused != Some(a.node);
            }
            if any {
                let ms = (end - a.invoked) / 1000;
                report.slowest_write_while_hung_ms =
                    Some(report.slowest_write_while_hung_ms.map_or(ms, |m| m.max(ms)));
                if past {
                    let slot = report
                        .slowest_write_past_hung_ms
                        .entry(a.consistency.clone())
                        .or_insert(0);
                    *slot = (*slot).max(ms);
                }
            }
        }
    }
}
