//! The properties, one function each: a verdict from the logical operations, the final
//! answers and (for strict writes and convergence) the fault and convergence records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{normalise, verdict, who, Finals, Logical, Verdict, HLL_RELATIVE_BOUND};
use crate::history::{Op, Record, COUNTER_VIEW, HLL_VIEW, MAX_VIEW, REGISTER_VIEW, SET_VIEW};

pub(super) fn check_counters(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
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

pub(super) fn members(value: &serde_json::Value) -> Option<BTreeSet<String>> {
    value.as_array().map(|a| {
        a.iter()
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
            .collect()
    })
}

pub(super) fn check_sets(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
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

pub(super) fn check_hll(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
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

pub(super) fn check_max(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
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

pub(super) fn check_registers(ops: &HashMap<(String, u64), Logical>, finals: &Finals) -> Verdict {
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

pub(super) fn check_strict(
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

pub(super) fn check_convergence(records: &[Record], finals: &Finals) -> Verdict {
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
