//! Scenarios: what happens to the cluster, as a list of steps in a small readable form.
//!
//! ```text
//! Partition([a],[b,c]); Wait(4s); Heal; AssertConverged; Kill(b); Wait(3s); Restart(b)
//! ```
//! Nodes are letters (`a` is the first node). A scenario is parsed from that text
//! ([`Scenario::parse`]), printed back in the same form ([`std::fmt::Display`]), so a run
//! found by a random seed ([`Scenario::random`]) can be replayed exactly with
//! `--scenario "…"`. This module is pure: it knows no processes and no network.

use std::fmt;
use std::time::Duration;

/// A node of the cluster, by position (`a` = 0).
pub type NodeIx = usize;

/// One thing that happens to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// SIGKILL the node; it stays down until [`Step::Restart`].
    Kill(NodeIx),
    /// Start the node again on its data directory (kills it first if it is running).
    Restart(NodeIx),
    /// SIGSTOP: sockets stay open, nothing answers (a hung peer).
    Pause(NodeIx),
    /// SIGCONT.
    Resume(NodeIx),
    /// Packets between nodes of different groups are dropped (both ways); nodes in no
    /// group keep talking to everyone. Clients still reach every node.
    Partition(Vec<Vec<NodeIx>>),
    /// The node sees every other node; the others do not see each other.
    Bridge(NodeIx),
    /// Packets from the first node to the second are dropped (one way: the TCP
    /// connections between them stall in both directions, but only one side's packets
    /// are lost).
    Drop(NodeIx, NodeIx),
    /// The node loses this percentage of the packets it sends to other nodes.
    Loss(NodeIx, u8),
    /// The node's link goes down: clients cannot reach it either.
    Cut(NodeIx),
    /// Every network fault is removed (partitions, drops, losses, cut links).
    Heal,
    /// The node's data directory (a small tmpfs) is filled up.
    FillDisk(NodeIx),
    /// The filler is removed: space returns.
    FreeDisk(NodeIx),
    /// Restart the node with its clock this many seconds off (`faketime`).
    Skew(NodeIx, i64),
    /// Restart the node with the true clock.
    Unskew(NodeIx),
    /// Restart every node in turn, each waiting until the others see it up.
    RollingRestart,
    /// Let the workload run.
    Wait(Duration),
    /// Quiesce the clients, then wait until every running node's `local` answer of every
    /// workload key is the same, and measure how long that took.
    AssertConverged,
}

/// A list of steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scenario {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// A scenario text that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scenario step {index} ('{text}'): {reason}")]
pub struct ParseError {
    /// Position of the step (from 1).
    pub index: usize,
    /// The step's text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// The kinds of fault a random scenario draws its cycles from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Kill a node, wait, restart it.
    Kill,
    /// Pause a node, wait, resume it.
    Pause,
    /// Partition one node from the others.
    Isolate,
    /// Split the nodes into a majority and a minority.
    Split,
    /// A bridge topology.
    Bridge,
    /// A one-way drop between two nodes.
    OneWay,
    /// Random packet loss on one node.
    Loss,
    /// One node's link down (clients cut off too).
    Cut,
    /// A rolling restart of every node.
    Rolling,
    /// A full disk on one node.
    FullDisk,
    /// One node's clock an hour ahead.
    Skew,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::Loss,
        FaultKind::Cut,
        FaultKind::Rolling,
        FaultKind::FullDisk,
        FaultKind::Skew,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "oneway",
            FaultKind::Loss => "loss",
            FaultKind::Cut => "cut",
            FaultKind::Rolling => "rolling",
            FaultKind::FullDisk => "fulldisk",
            FaultKind::Skew => "skew",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A small seeded generator (splitmix64): the same seed gives the same scenario on every
/// machine.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

impl Scenario {
    /// `cycles` fault cycles over `nodes` nodes, drawn by `seed` from `kinds` taken in
    /// turn (so every kind appears once `cycles` ≥ `kinds.len()`), each followed by its
    /// heal and [`Step::AssertConverged`]. `wait` bounds each fault's duration.
    pub fn random(
        seed: u64,
        cycles: usize,
        nodes: usize,
        kinds: &[FaultKind],
        wait: (Duration, Duration),
    ) -> Scenario {
        let mut rng = SeededRng::new(seed);
        let mut steps = Vec::new();
        if kinds.is_empty() || nodes == 0 {
            return Scenario { steps };
        }
        let offset = rng.below(kinds.len() as u64) as usize;
        for cycle in 0..cycles {
            let kind = kinds[(cycle + offset) % kinds.len()];
            let hold = Duration::from_millis(
                rng.between(wait.0.as_millis() as u64, wait.1.as_millis() as u64),
            );
            let x = rng.below(nodes as u64) as usize;
            let y = (x + 1 + rng.below(nodes.saturating_sub(1).max(1) as u64) as usize) % nodes;
            match kind {
                FaultKind::Kill => {
                    steps.extend([Step::Kill(x), Step::Wait(hold), Step::Restart(x)])
                }
                FaultKind::Pause => {
                    steps.extend([Step::Pause(x), Step::Wait(hold), Step::Resume(x)])
                }
                FaultKind::Isolate => steps.extend([
                    Step::Partition(vec![vec![x], (0..nodes).filter(|&n| n != x).collect()]),
                    Step::Wait(hold),
                    Step::Heal,
                ]),
                FaultKind::Split => {
                    let mut order: Vec<NodeIx> = (0..nodes).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    let minority = order.split_off(nodes.div_ceil(2));
                    let (mut major, mut minor) = (order, minority);
                    major.sort_unstable();
                    minor.sort_unstable();
                    steps.extend([
                        Step::Partition(vec![major, minor]),
                        Step::Wait(hold),
                        Step::Heal,
                    ])
                }
                FaultKind::Bridge => steps.extend([Step::Bridge(x), Step::Wait(hold), Step::Heal]),
                FaultKind::OneWay => steps.extend([Step::Drop(x, y), Step::Wait(hold), Step::Heal]),
                FaultKind::Loss => {
                    let percent = rng.between(20, 60) as u8;
                    steps.extend([Step::Loss(x, percent), Step::Wait(hold), Step::Heal])
                }
                FaultKind::Cut => steps.extend([Step::Cut(x), Step::Wait(hold), Step::Heal]),
                FaultKind::Rolling => steps.push(Step::RollingRestart),
                FaultKind::FullDisk => {
                    steps.extend([Step::FillDisk(x), Step::Wait(hold), Step::FreeDisk(x)])
                }
                FaultKind::Skew => {
                    steps.extend([Step::Skew(x, 3600), Step::Wait(hold), Step::Unskew(x)])
                }
            }
            steps.push(Step::AssertConverged);
        }
        Scenario { steps }
    }

    /// Parses `Step; Step; …` (newlines also separate steps; `#` starts a comment).
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut steps = Vec::new();
        let cleaned: String = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(";");
        for (index, raw) in split_steps(&cleaned).into_iter().enumerate() {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let fail = |reason: &str| ParseError {
                index: index + 1,
                text: raw.to_string(),
                reason: reason.to_string(),
            };
            steps.push(parse_step(raw).map_err(|r| fail(&r))?);
        }
        Ok(Scenario { steps })
    }

    /// The highest node index any step names, if any.
    pub fn highest_node(&self) -> Option<NodeIx> {
        self.steps.iter().flat_map(Step::nodes).max()
    }

    /// How many fault cycles (steps followed by an [`Step::AssertConverged`]).
    pub fn cycles(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::AssertConverged))
            .count()
    }
}

/// Splits on `;` outside brackets and parentheses.
fn split_steps(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, ch) in text.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ';' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn node(text: &str) -> Result<NodeIx, String> {
    let text = text.trim();
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'a'..='z'), None) => Ok(c as usize - 'a' as usize),
        _ => Err(format!(
            "'{text}' is not a node (a letter: a is the first node)"
        )),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000)
    } else {
        return Err(format!("'{text}' is not a duration (e.g. 500ms, 5s)"));
    };
    let number: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 5s)"))?;
    Ok(Duration::from_millis(number.saturating_mul(scale)))
}

fn groups(text: &str) -> Result<Vec<Vec<NodeIx>>, String> {
    let mut groups = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let open = rest
            .strip_prefix('[')
            .ok_or_else(|| format!("expected '[' at '{rest}'"))?;
        let close = open
            .find(']')
            .ok_or_else(|| "a group lacks its ']'".to_string())?;
        let members = open[..close]
            .split(',')
            .filter(|m| !m.trim().is_empty())
            .map(node)
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(members);
        rest = open[close + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim();
    }
    if groups.len() < 2 {
        return Err("a partition needs at least two groups".to_string());
    }
    let mut seen: Vec<NodeIx> = groups.iter().flatten().copied().collect();
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err("a node is in two groups".to_string());
    }
    Ok(groups)
}

fn parse_step(raw: &str) -> Result<Step, String> {
    let (name, args) = match raw.find('(') {
        Some(open) => {
            let args = raw[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| "missing ')'".to_string())?;
            (raw[..open].trim(), Some(args))
        }
        None => (raw, None),
    };
    let one = |args: Option<&str>| node(args.ok_or("needs a node, e.g. (a)")?);
    let two = |args: Option<&str>| -> Result<(String, String), String> {
        let args = args.ok_or("needs two arguments")?;
        let (x, y) = args
            .split_once(',')
            .or_else(|| args.split_once("->"))
            .ok_or("needs two arguments")?;
        Ok((x.trim().to_string(), y.trim().to_string()))
    };
    match (name, args) {
        ("Kill", a) => Ok(Step::Kill(one(a)?)),
        ("Restart", a) => Ok(Step::Restart(one(a)?)),
        ("Pause", a) => Ok(Step::Pause(one(a)?)),
        ("Resume", a) => Ok(Step::Resume(one(a)?)),
        ("Bridge", a) => Ok(Step::Bridge(one(a)?)),
        ("Cut", a) => Ok(Step::Cut(one(a)?)),
        ("FillDisk", a) => Ok(Step::FillDisk(one(a)?)),
        ("FreeDisk", a) => Ok(Step::FreeDisk(one(a)?)),
        ("Unskew", a) => Ok(Step::Unskew(one(a)?)),
        ("Partition", Some(a)) => Ok(Step::Partition(groups(a)?)),
        ("Drop", a) => {
            let (x, y) = two(a)?;
            let (x, y) = (node(&x)?, node(&y)?);
            if x == y {
                return Err("a node does not drop its own packets".to_string());
            }
            Ok(Step::Drop(x, y))
        }
        ("Loss", a) => {
            let (x, p) = two(a)?;
            let percent: u8 = p
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("'{p}' is not a percentage (0 to 100)"))?;
            Ok(Step::Loss(node(&x)?, percent))
        }
        ("Skew", a) => {
            let (x, secs) = two(a)?;
            let secs: i64 = secs
                .trim_end_matches('s')
                .trim_start_matches('+')
                .parse()
                .map_err(|_| format!("'{secs}' is not a number of seconds (e.g. +3600s)"))?;
            Ok(Step::Skew(node(&x)?, secs))
        }
        ("Wait", Some(a)) => Ok(Step::Wait(duration(a)?)),
        ("Heal", None) => Ok(Step::Heal),
        ("RollingRestart", None) => Ok(Step::RollingRestart),
        ("AssertConverged", None) => Ok(Step::AssertConverged),
        (name, _) => Err(format!(
            "unknown step '{name}' (Kill, Restart, Pause, Resume, Partition, Bridge, Drop, Loss, Cut, Heal, FillDisk, FreeDisk, Skew, Unskew, RollingRestart, Wait, AssertConverged)"
        )),
    }
}

fn letter(n: NodeIx) -> char {
    char::from(b'a' + (n % 26) as u8)
}

impl Step {
    /// The nodes the step names.
    pub fn nodes(&self) -> Vec<NodeIx> {
        match self {
            Step::Kill(n)
            | Step::Restart(n)
            | Step::Pause(n)
            | Step::Resume(n)
            | Step::Bridge(n)
            | Step::Loss(n, _)
            | Step::Cut(n)
            | Step::FillDisk(n)
            | Step::FreeDisk(n)
            | Step::Skew(n, _)
            | Step::Unskew(n) => vec![*n],
            Step::Drop(x, y) => vec![*x, *y],
            Step::Partition(groups) => groups.iter().flatten().copied().collect(),
            Step::Heal | Step::RollingRestart | Step::Wait(_) | Step::AssertConverged => vec![],
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Kill(n) => write!(f, "Kill({})", letter(*n)),
            Step::Restart(n) => write!(f, "Restart({})", letter(*n)),
            Step::Pause(n) => write!(f, "Pause({})", letter(*n)),
            Step::Resume(n) => write!(f, "Resume({})", letter(*n)),
            Step::Bridge(n) => write!(f, "Bridge({})", letter(*n)),
            Step::Cut(n) => write!(f, "Cut({})", letter(*n)),
            Step::FillDisk(n) => write!(f, "FillDisk({})", letter(*n)),
            Step::FreeDisk(n) => write!(f, "FreeDisk({})", letter(*n)),
            Step::Unskew(n) => write!(f, "Unskew({})", letter(*n)),
            Step::Drop(x, y) => write!(f, "Drop({}->{})", letter(*x), letter(*y)),
            Step::Loss(n, p) => write!(f, "Loss({}, {p}%)", letter(*n)),
            Step::Skew(n, s) => write!(f, "Skew({}, {s:+}s)", letter(*n)),
            Step::Partition(groups) => {
                let groups: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let names: Vec<String> = g.iter().map(|n| letter(*n).to_string()).collect();
                        format!("[{}]", names.join(","))
                    })
                    .collect();
                write!(f, "Partition({})", groups.join(","))
            }
            Step::Wait(d) if d.as_millis() % 1000 == 0 => write!(f, "Wait({}s)", d.as_secs()),
            Step::Wait(d) => write!(f, "Wait({}ms)", d.as_millis()),
            Step::Heal => write!(f, "Heal"),
            Step::RollingRestart => write!(f, "RollingRestart"),
            Step::AssertConverged => write!(f, "AssertConverged"),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self.steps.iter().map(Step::to_string).collect();
        write!(f, "{}", steps.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_readable_form_parses_and_prints_back() {
        let text = "Partition([a],[b,c]); Wait(5s); Heal; Kill(b); Wait(500ms); Restart(b); \
                    Pause(c); Resume(c); Drop(a->b); Loss(c, 30%); Bridge(a); Cut(b); \
                    Skew(a, +3600s); Unskew(a); FillDisk(c); FreeDisk(c); RollingRestart; AssertConverged";
        let scenario = Scenario::parse(text).unwrap();
        assert_eq!(scenario.steps.len(), 18);
        assert_eq!(
            scenario.steps[0],
            Step::Partition(vec![vec![0], vec![1, 2]])
        );
        assert_eq!(scenario.steps[4], Step::Wait(Duration::from_millis(500)));
        assert_eq!(scenario.to_string(), text);
        assert_eq!(Scenario::parse(&scenario.to_string()).unwrap(), scenario);
        assert_eq!(scenario.highest_node(), Some(2));
    }

    #[test]
    fn mistakes_are_named() {
        let e = Scenario::parse("Heal; Kill(B)").unwrap_err();
        assert_eq!(e.index, 2, "{e}");
        assert!(Scenario::parse("Partition([a])").is_err());
        assert!(Scenario::parse("Partition([a],[a,b])").is_err());
        assert!(Scenario::parse("Wait(5)").is_err());
        assert!(Scenario::parse("Loss(a, 130%)").is_err());
        assert!(Scenario::parse("Explode(a)")
            .unwrap_err()
            .reason
            .contains("unknown step"));
    }

    #[test]
    fn a_seed_gives_the_same_scenario_and_covers_every_kind() {
        let wait = (Duration::from_secs(1), Duration::from_secs(3));
        let a = Scenario::random(7, 22, 3, &FaultKind::ALL, wait);
        assert_eq!(a, Scenario::random(7, 22, 3, &FaultKind::ALL, wait));
        assert_ne!(a, Scenario::random(8, 22, 3, &FaultKind::ALL, wait));
        assert_eq!(a.cycles(), 22);
        assert!(a.highest_node().unwrap() < 3);
        assert_eq!(Scenario::parse(&a.to_string()).unwrap(), a);
        for kind in [
            "Kill",
            "Pause",
            "Partition",
            "Bridge",
            "Drop",
            "Loss",
            "Cut",
            "Rolling",
            "FillDisk",
            "Skew",
        ] {
            assert!(a.to_string().contains(kind), "{kind} missing from {a}");
        }
    }
}
