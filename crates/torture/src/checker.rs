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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::history::{Op, Record, COUNTER_VIEW, HLL_VIEW, MAX_VIEW, REGISTER_VIEW, SET_VIEW};

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
            } => {
                if let Some(a) = ops
                    .get_mut(&(client.clone(), *op_id))
                    .and_then(|l| l.attempts.get_mut(attempt))
                {
                    a.acked = true;
                    a.ended = Some(*t);
                }
            }
            Record::Fail {
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

fn check_counters(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
    let mut bounds: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for l in ops.values() {
        if let Op::Incr { key, by, .. } = &l.op {
            let b = bounds.entry(key.as_str()).or_default();
            b.1 += by;
            if l.acked() {
                b.0 += by;
            }
        }
    }
    let (mut problems, mut checked) = (Vec::new(), 0);
    for (key, answers) in finals.rows(COUNTER_VIEW) {
        let (lower, upper) = bounds.get(key).copied().unwrap_or_default();
        for (node, consistency, value) in answers {
            checked += 1;
            let Some(v) = value.as_i64() else {
                problems.push(format!(
                    "{key}: {} answered {value}",
                    who(*node, consistency)
                ));
                continue;
            };
            if v < lower {
                problems.push(format!(
                    "{key}: {} answered {v}, {} acknowledged increments LOST (acknowledged {lower}, invoked {upper})",
                    who(*node, consistency),
                    lower - v
                ));
            } else if v > upper {
                problems.push(format!(
                    "{key}: {} answered {v}, {} DOUBLE COUNTED (acknowledged {lower}, invoked {upper})",
                    who(*node, consistency),
                    v - upper
                ));
            }
        }
    }
    let exact = bounds.values().filter(|(l, u)| l == u).count();
    let sum: i64 = bounds.values().map(|b| b.0).sum();
    verdict(
        "counters exact",
        problems,
        format!(
            "{} keys ({exact} with every increment acknowledged, so exact), {sum} acknowledged in all, {checked} answers checked",
            bounds.len()
        ),
    )
}

fn members(value: &serde_json::Value) -> Option<BTreeSet<String>> {
    value.as_array().map(|a| {
        a.iter()
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
            .collect()
    })
}

fn check_sets(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
    let mut must: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut added: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut removed: BTreeSet<(&str, &str)> = BTreeSet::new();
    for l in ops.values() {
        match &l.op {
            Op::Add { key, member } => {
                added.entry(key).or_default().insert(member);
                if l.acked() {
                    must.entry(key).or_default().insert(member);
                }
            }
            Op::Remove { key, member } => {
                removed.insert((key, member));
            }
            _ => {}
        }
    }
    let (mut problems, mut checked) = (Vec::new(), 0);
    for (key, answers) in finals.rows(SET_VIEW) {
        let must: Vec<&str> = must
            .get(key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|m| !removed.contains(&(key, *m)))
            .collect();
        for (node, consistency, value) in answers {
            checked += 1;
            let Some(present) = members(value) else {
                problems.push(format!(
                    "{key}: {} answered {value}",
                    who(*node, consistency)
                ));
                continue;
            };
            let missing: Vec<&&str> = must.iter().filter(|m| !present.contains(**m)).collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{key}: {} LOST {} acknowledged adds, e.g. {:?}",
                    who(*node, consistency),
                    missing.len(),
                    missing.iter().take(3).collect::<Vec<_>>()
                ));
            }
            let invented: Vec<&String> = present
                .iter()
                .filter(|m| !added.get(key).is_some_and(|a| a.contains(m.as_str())))
                .collect();
            if !invented.is_empty() {
                problems.push(format!(
                    "{key}: {} holds members nobody added: {:?}",
                    who(*node, consistency),
                    invented.iter().take(3).collect::<Vec<_>>()
                ));
            }
        }
    }
    let kept: usize = must.values().map(BTreeSet::len).sum();
    verdict(
        "set adds kept",
        problems,
        format!(
            "{kept} acknowledged adds ({} removes invoked), {checked} answers checked",
            removed.len()
        ),
    )
}

fn check_hll(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
    let mut bounds: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for l in ops.values() {
        if let Op::PfAdd { key, member } = &l.op {
            let b = bounds.entry(key).or_default();
            b.1.insert(member);
            if l.acked() {
                b.0.insert(member);
            }
        }
    }
    let (mut problems, mut checked) = (Vec::new(), 0);
    for (key, answers) in finals.rows(HLL_VIEW) {
        let (lower, upper) = bounds
            .get(key)
            .map_or((0.0, 0.0), |(a, i)| (a.len() as f64, i.len() as f64));
        let (lo, hi) = (
            (lower * (1.0 - HLL_RELATIVE_BOUND)).floor(),
            (upper * (1.0 + HLL_RELATIVE_BOUND)).ceil(),
        );
        for (node, consistency, value) in answers {
            checked += 1;
            match value.as_f64() {
                Some(v) if v >= lo && v <= hi => {}
                _ => problems.push(format!(
                    "{key}: {} answered {value}, outside [{lo}, {hi}] ({lower} acknowledged, {upper} invoked distinct members)",
                    who(*node, consistency)
                )),
            }
        }
    }
    verdict(
        "distinct within bound",
        problems,
        format!(
            "{} keys, ±{:.1}% of the acknowledged/invoked members, {checked} answers checked",
            bounds.len(),
            HLL_RELATIVE_BOUND * 100.0
        ),
    )
}

fn check_max(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
    let mut bounds: BTreeMap<&str, (Option<i64>, Option<i64>)> = BTreeMap::new();
    for l in ops.values() {
        if let Op::Max { key, value } = &l.op {
            let b = bounds.entry(key).or_default();
            b.1 = b.1.max(Some(*value));
            if l.acked() {
                b.0 = b.0.max(Some(*value));
            }
        }
    }
    let (mut problems, mut checked) = (Vec::new(), 0);
    for (key, answers) in finals.rows(MAX_VIEW) {
        let (lower, upper) = bounds.get(key).copied().unwrap_or_default();
        for (node, consistency, value) in answers {
            checked += 1;
            let v = value.as_i64();
            if v < lower || v > upper {
                problems.push(format!(
                    "{key}: {} answered {value}, acknowledged max {lower:?}, invoked max {upper:?}",
                    who(*node, consistency)
                ));
            }
        }
    }
    verdict(
        "max exact",
        problems,
        format!("{} keys, {checked} answers checked", bounds.len()),
    )
}

fn check_registers(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
    let mut written: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut acked: BTreeMap<&str, usize> = BTreeMap::new();
    for l in ops.values() {
        if let Op::Set { key, value } = &l.op {
            written.entry(key).or_default().insert(value);
            if l.acked() {
                *acked.entry(key).or_default() += 1;
            }
        }
    }
    let (mut problems, mut checked) = (Vec::new(), 0);
    for (key, answers) in finals.rows(REGISTER_VIEW) {
        for (node, consistency, value) in answers {
            checked += 1;
            let ok = match value.as_str() {
                Some(v) => written.get(key).is_some_and(|w| w.contains(v)),
                None => value.is_null() && acked.get(key).copied().unwrap_or(0) == 0,
            };
            if !ok {
                problems.push(format!(
                    "{key}: {} answered {value}, which no client set",
                    who(*node, consistency)
                ));
            }
        }
    }
    verdict(
        "register written",
        problems,
        format!("{} keys, {checked} answers checked", written.len()),
    )
}

/// The fault states in time order: (from, reach, alive).
type FaultState<'a> = (u64, &'a [Vec<Option<bool>>], &'a [bool]);

fn fault_states(records: &[Record]) -> Vec<FaultState<'_>> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Fault {
                t, reach, alive, ..
            } => Some((*t, reach.as_slice(), alive.as_slice())),
            _ => None,
        })
        .collect()
}

fn check_strict(
    ops: &HashMap<(String, u64), Logical>,
    records: &[Record],
    (nodes, replicas): (usize, usize),
) -> Verdict {
    if nodes == 0 || replicas < nodes {
        return verdict(
            "strict writes refused",
            Vec::new(),
            format!("not checked: {replicas} replicas of {nodes} nodes (needs every node to replicate every key)"),
        );
    }
    let states = fault_states(records);
    let needed = |consistency: &str| match consistency {
        "one" => 1,
        "all" => replicas,
        _ => replicas / 2 + 1,
    };
    let reachable = |state: &FaultState, c: usize| -> usize {
        let (_, reach, alive) = state;
        if !alive.get(c).copied().unwrap_or(true) {
            return 0;
        }
        (0..nodes)
            .filter(|&j| {
                reach
                    .get(c)
                    .and_then(|row| row.get(j))
                    .copied()
                    .flatten()
                    .unwrap_or(true)
            })
            .count()
    };
    let (mut problems, mut strict) = (Vec::new(), 0);
    for ((client, op_id), l) in ops {
        for (n, a) in &l.attempts {
            if a.quorum != "strict" {
                continue;
            }
            strict += 1;
            let (Some(end), true) = (a.ended, a.acked) else {
                continue;
            };
            // The states in effect during [invoked, end]: the last one at or before the
            // invocation, and every later one up to the end.
            let first = states.iter().rposition(|s| s.0 <= a.invoked);
            let during: Vec<&FaultState> = states
                .iter()
                .enumerate()
                .filter(|(i, s)| Some(*i) == first || (s.0 > a.invoked && s.0 <= end))
                .map(|(_, s)| s)
                .collect();
            let need = needed(&a.consistency);
            if !during.is_empty()
                && first.is_some()
                && during.iter().all(|s| reachable(s, a.node) < need)
            {
                problems.push(format!(
                    "{client} op {op_id} attempt {n} ({} strict via {}) acknowledged while its coordinator reached {} of the {need} replicas it needs",
                    a.consistency,
                    char::from(b'a' + (a.node % 26) as u8),
                    during.iter().map(|s| reachable(s, a.node)).max().unwrap_or(0)
                ));
            }
        }
    }
    verdict(
        "strict writes refused",
        problems,
        format!(
            "{strict} strict attempts checked against {} fault states",
            states.len()
        ),
    )
}

fn check_convergence(records: &[Record], finals: &Finals) -> Verdict {
    let mut problems = Vec::new();
    let mut cycles = 0;
    for r in records {
        match r {
            Record::Converged { .. } => cycles += 1,
            Record::NotConverged {
                cycle,
                waited_ms,
                detail,
                ..
            } => {
                cycles += 1;
                problems.push(format!(
                    "cycle {cycle}: not converged after {waited_ms} ms: {detail}"
                ));
            }
            _ => {}
        }
    }
    let mut rows = 0;
    for ((view, key), answers) in &finals.by_row {
        let locals: BTreeSet<String> = answers
            .iter()
            .filter(|(_, c, _)| *c == "local")
            .map(|(_, _, v)| normalise(v))
            .collect();
        rows += 1;
        if locals.len() > 1 {
            problems.push(format!(
                "{view}/{key}: final local answers differ: {:?}",
                locals.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    verdict(
        "converged",
        problems,
        format!("{cycles} heals, {rows} rows agree on every node at the end"),
    )
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
    let mut hung: Vec<(u64, u64)> = Vec::new();
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
                        hung.push((from, *t));
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
            if hung.iter().any(|(from, to)| a.invoked < *to && end > *from) {
                let ms = (end - a.invoked) / 1000;
                report.slowest_write_while_hung_ms =
                    Some(report.slowest_write_while_hung_ms.map_or(ms, |m| m.max(ms)));
            }
        }
    }
}
