//! Event mappings: which events feed a view, and the update each one makes.
//!
//! Declared with the view:
//! ```json
//! {"type":"counter","epoch_secs":3600,
//!  "mapping":{"filter":"type == \"pageview\"","key":"url","clustering":"hour(ts)","op":"incr 1"}}
//! ```
//! - `filter` (optional; every event when absent): comparisons joined by `and` (or `&&`):
//!   `path == literal`, `path != literal`, `has(path)`. Literals: `"text"`, numbers,
//!   `true`, `false`, `null`. A missing field is unequal to every literal.
//! - `key`: one or more terms separated by commas, whose values are joined with `|`.
//! - `clustering` (optional; empty when absent): terms as for `key`.
//! - A term: a field path (`url`, `user.id`), a quoted literal, or a time bucket of a field
//!   holding seconds: `minute(ts)`, `hour(ts)`, `day(ts)` (UTC, e.g. `2024-11-24T12`).
//! - `op`: `incr [n|path]`, `decr [n|path]` (default 1), `max path|n`, `min path|n`,
//!   `set path`, `add path`, `remove path`, `pfadd path`. For `add`/`remove`/`pfadd` a
//!   field holding an array adds each element.
//!
//! The path `ts` always means the event time in whole seconds (the arrival time when the
//! event has none), so `hour(ts)` and `max ts` work for every event. Field values used in
//! keys must be strings, numbers or booleans; a number used as an amount must be an
//! integer (a string holding one is accepted, which is what Redis stream fields hold).

use serde_json::Value as Json;
pub use speedlayer_api::MappingSpec;
use speedlayer_core::{Key, Op, ValueType};

use crate::bucket::Bucket;
use crate::event::{number, Event};
use crate::lex::{tokens, Tok};

/// Separator between the values of a multi-term key.
pub const KEY_JOIN: &str = "|";
/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 1024;

/// Why a mapping was refused at declaration; names the part and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mapping {part}: {reason}")]
pub struct MappingError {
    /// `filter`, `key`, `clustering` or `op`.
    pub part: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn err(part: &'static str, reason: impl Into<String>) -> MappingError {
    MappingError {
        part,
        reason: reason.into(),
    }
}

/// The update one event makes in one view.
#[derive(Clone, Debug, PartialEq)]
pub struct Derived {
    /// Row to update.
    pub key: Key,
    /// What to apply.
    pub op: Op,
}

/// A checked mapping, ready to evaluate events.
#[derive(Clone, Debug)]
pub struct Mapping {
    filter: Vec<Cond>,
    key: Vec<Term>,
    clustering: Vec<Term>,
    op: OpExpr,
}

#[derive(Clone, Debug, PartialEq)]
struct Path(Vec<String>);

#[derive(Clone, Debug)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Clone, Debug)]
enum Cond {
    Has(Path),
    Eq(Path, Literal),
    Ne(Path, Literal),
}

#[derive(Clone, Debug)]
enum Term {
    Field(Path),
    Literal(String),
    Bucket(Bucket, Path),
}

#[derive(Clone, Debug)]
enum Amount {
    Const(i64),
    Field(Path),
}

#[derive(Clone, Debug)]
enum OpExpr {
    Incr { negate: bool, by: Amount },
    Max(Amount),
    Min(Amount),
    Set(Term),
    Members { kind: MemberOp, path: Path },
}

#[derive(Clone, Copy, Debug)]
enum MemberOp {
    Add,
    Remove,
    PfAdd,
}

impl Mapping {
    /// Checks `spec` and that its op fits values of `value_type` (`None`: a view whose
    /// keys take any type).
    pub fn compile(
        spec: &MappingSpec,
        value_type: Option<ValueType>,
    ) -> Result<Mapping, MappingError> {
        for (part, text) in [
            ("filter", spec.filter.as_deref().unwrap_or("")),
            ("key", &spec.key),
            ("clustering", spec.clustering.as_deref().unwrap_or("")),
            ("op", &spec.op),
        ] {
            if text.len() > MAX_EXPR_LEN {
                return Err(err(part, format!("longer than {MAX_EXPR_LEN} bytes")));
            }
        }
        let filter = match spec.filter.as_deref() {
            None => Vec::new(),
            Some(text) => parse_filter(text).map_err(|r| err("filter", r))?,
        };
        let key = parse_terms(&spec.key).map_err(|r| err("key", r))?;
        if key.is_empty() {
            return Err(err("key", "needs at least one term"));
        }
        let clustering = match spec.clustering.as_deref() {
            None => Vec::new(),
            Some(text) => parse_terms(text).map_err(|r| err("clustering", r))?,
        };
        let op = parse_op(&spec.op).map_err(|r| err("op", r))?;
        if let Some(ty) = value_type {
            let sample = op.sample();
            if !sample.fits(ty) {
                return Err(err(
                    "op",
                    format!("'{}' does not apply to a {ty} view", sample.name()),
                ));
            }
            if ty == ValueType::Gcounter && matches!(op, OpExpr::Incr { negate: true, .. }) {
                return Err(err("op", "a gcounter only grows: 'decr' does not apply"));
            }
        }
        Ok(Mapping {
            filter,
            key,
            clustering,
            op,
        })
    }

    /// The update `event` makes: `Ok(None)` when the filter leaves it out, `Err(reason)`
    /// when it passes the filter but lacks what the mapping needs (a missing field, a
    /// value of the wrong kind); such an event is skipped for this view only.
    pub fn derive(&self, event: &Event) -> Result<Option<Derived>, String> {
        if !self.filter.iter().all(|c| c.holds(event)) {
            return Ok(None);
        }
        let partition = join_terms(&self.key, event)?;
        let clustering = join_terms(&self.clustering, event)?;
        let key =
            Key::new(partition.into_bytes(), clustering.into_bytes()).map_err(|e| e.to_string())?;
        let op = self.op.eval(event)?;
        Ok(Some(Derived { key, op }))
    }
}

fn parse_filter(text: &str) -> Result<Vec<Cond>, String> {
    let toks = tokens(text)?;
    let mut conds = Vec::new();
    for part in toks.split(|t| *t == Tok::And) {
        conds.push(match part {
            [Tok::Ident(f), Tok::LParen, Tok::Ident(p), Tok::RParen] if f == "has" => {
                Cond::Has(path(p))
            }
            [Tok::Ident(p), Tok::Eq, lit] => Cond::Eq(path(p), literal(lit)?),
            [Tok::Ident(p), Tok::Ne, lit] => Cond::Ne(path(p), literal(lit)?),
            [] => return Err("empty condition (a stray 'and'?)".into()),
            _ => return Err(
                "expected 'field == literal', 'field != literal' or 'has(field)', joined by 'and'"
                    .into(),
            ),
        });
    }
    Ok(conds)
}

fn literal(tok: &Tok) -> Result<Literal, String> {
    Ok(match tok {
        Tok::Str(s) => Literal::Str(s.clone()),
        Tok::Num(n) => Literal::Num(n.parse().map_err(|_| format!("'{n}' is not a number"))?),
        Tok::Ident(w) if w == "true" => Literal::Bool(true),
        Tok::Ident(w) if w == "false" => Literal::Bool(false),
        Tok::Ident(w) if w == "null" => Literal::Null,
        Tok::Ident(w) => return Err(format!("'{w}' is not a literal (quote strings: \"{w}\")")),
        other => return Err(format!("expected a literal, found {other:?}")),
    })
}

fn path(text: &str) -> Path {
    Path(text.split('.').map(str::to_string).collect())
}

fn parse_terms(text: &str) -> Result<Vec<Term>, String> {
    let toks = tokens(text)?;
    if toks.is_empty() {
        return Ok(Vec::new());
    }
    toks.split(|t| *t == Tok::Comma).map(term).collect()
}

fn term(toks: &[Tok]) -> Result<Term, String> {
    match toks {
        [Tok::Ident(p)] => Ok(Term::Field(path(p))),
        [Tok::Str(s)] => Ok(Term::Literal(s.clone())),
        [Tok::Num(n)] => Ok(Term::Literal(n.clone())),
        [Tok::Ident(f), Tok::LParen, Tok::Ident(p), Tok::RParen] => match Bucket::named(f) {
            Some(b) => Ok(Term::Bucket(b, path(p))),
            None => Err(format!(
                "unknown function '{f}' (expected minute, hour or day)"
            )),
        },
        [] => Err("empty term (a stray ','?)".into()),
        _ => Err(
            "a term is a field, a quoted literal, or minute(field) / hour(field) / day(field)"
                .into(),
        ),
    }
}

fn parse_op(text: &str) -> Result<OpExpr, String> {
    let toks = tokens(text)?;
    let (name, rest) = match toks.split_first() {
        Some((Tok::Ident(name), rest)) => (name.as_str(), rest),
        _ => {
            return Err(
                "expected an op name: incr, decr, max, min, set, add, remove or pfadd".into(),
            )
        }
    };
    let amount = |rest: &[Tok], default: Option<i64>| -> Result<Amount, String> {
        match (rest, default) {
            ([], Some(d)) => Ok(Amount::Const(d)),
            ([Tok::Num(n)], _) => n
                .parse::<i64>()
                .map(Amount::Const)
                .map_err(|_| format!("'{n}' is not an integer")),
            ([Tok::Ident(p)], _) => Ok(Amount::Field(path(p))),
            _ => Err(format!("'{name}' takes one integer or field")),
        }
    };
    let field = |rest: &[Tok]| -> Result<Path, String> {
        match rest {
            [Tok::Ident(p)] => Ok(path(p)),
            _ => Err(format!("'{name}' takes one field")),
        }
    };
    Ok(match name {
        "incr" => OpExpr::Incr {
            negate: false,
            by: amount(rest, Some(1))?,
        },
        "decr" => OpExpr::Incr {
            negate: true,
            by: amount(rest, Some(1))?,
        },
        "max" => OpExpr::Max(amount(rest, None)?),
        "min" => OpExpr::Min(amount(rest, None)?),
        "set" => OpExpr::Set(term(rest)?),
        "add" => OpExpr::Members {
            kind: MemberOp::Add,
            path: field(rest)?,
        },
        "remove" => OpExpr::Members {
            kind: MemberOp::Remove,
            path: field(rest)?,
        },
        "pfadd" => OpExpr::Members {
            kind: MemberOp::PfAdd,
            path: field(rest)?,
        },
        other => {
            return Err(format!(
                "unknown op '{other}' (expected incr, decr, max, min, set, add, remove or pfadd)"
            ))
        }
    })
}

impl Path {
    fn is_ts(&self) -> bool {
        self.0.len() == 1 && self.0[0] == "ts"
    }

    fn lookup<'e>(&self, event: &'e Event) -> Option<std::borrow::Cow<'e, Json>> {
        if self.is_ts() {
            return Some(std::borrow::Cow::Owned(Json::from(event.ts_secs())));
        }
        let (first, rest) = self.0.split_first()?;
        let mut at = event.fields.get(first)?;
        for segment in rest {
            at = at.as_object()?.get(segment)?;
        }
        Some(std::borrow::Cow::Borrowed(at))
    }

    fn name(&self) -> String {
        self.0.join(".")
    }

    fn require<'e>(&self, event: &'e Event) -> Result<std::borrow::Cow<'e, Json>, String> {
        self.lookup(event)
            .ok_or_else(|| format!("field '{}' is missing", self.name()))
    }
}

impl Cond {
    fn holds(&self, event: &Event) -> bool {
        match self {
            Cond::Has(p) => p.lookup(event).is_some_and(|v| !v.is_null()),
            Cond::Eq(p, lit) => p.lookup(event).is_some_and(|v| lit.equals(&v)),
            Cond::Ne(p, lit) => !p.lookup(event).is_some_and(|v| lit.equals(&v)),
        }
    }
}

impl Literal {
    fn equals(&self, json: &Json) -> bool {
        match (self, json) {
            (Literal::Str(s), Json::String(j)) => s == j,
            (Literal::Num(n), j) => number(j) == Some(*n),
            (Literal::Bool(b), Json::Bool(j)) => b == j,
            (Literal::Bool(b), Json::String(j)) => j == if *b { "true" } else { "false" },
            (Literal::Null, Json::Null) => true,
            _ => false,
        }
    }
}

fn scalar(json: &Json, what: &Path) -> Result<String, String> {
    match json {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        _ => Err(format!(
            "field '{}' must be a string, number or boolean",
            what.name()
        )),
    }
}

impl Term {
    fn eval(&self, event: &Event) -> Result<String, String> {
        match self {
            Term::Literal(s) => Ok(s.clone()),
            Term::Field(p) => scalar(&*p.require(event)?, p),
            Term::Bucket(bucket, p) => {
                let secs = if p.is_ts() {
                    event.ts_secs()
                } else {
                    let v = p.require(event)?;
                    let secs = number(&v).ok_or_else(|| {
                        format!("field '{}' must be a number of seconds", p.name())
                    })?;
                    if !(0.0..=crate::MAX_TS_SECS as f64).contains(&secs) {
                        return Err(format!("field '{}' is out of range", p.name()));
                    }
                    secs as i64
                };
                Ok(bucket.format(secs))
            }
        }
    }
}

fn join_terms(terms: &[Term], event: &Event) -> Result<String, String> {
    match terms {
        [] => Ok(String::new()),
        [one] => one.eval(event),
        many => {
            let parts: Result<Vec<String>, String> = many.iter().map(|t| t.eval(event)).collect();
            Ok(parts?.join(KEY_JOIN))
        }
    }
}

impl Amount {
    fn eval(&self, event: &Event) -> Result<i64, String> {
        match self {
            Amount::Const(n) => Ok(*n),
            Amount::Field(p) => {
                let v = p.require(event)?;
                match &*v {
                    Json::Number(n) if n.is_i64() => n.as_i64(),
                    Json::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("field '{}' must be an integer", p.name()))
            }
        }
    }
}

impl OpExpr {
    /// An op of this expression's kind, for the declaration-time type check.
    fn sample(&self) -> Op {
        match self {
            OpExpr::Incr { .. } => Op::Incr(1),
            OpExpr::Max(_) => Op::Max(0),
            OpExpr::Min(_) => Op::Min(0),
            OpExpr::Set(_) => Op::Set(Vec::new()),
            OpExpr::Members { kind, .. } => match kind {
                MemberOp::Add => Op::Add(Vec::new()),
                MemberOp::Remove => Op::Remove(Vec::new()),
                MemberOp::PfAdd => Op::PfAdd(Vec::new()),
            },
        }
    }

    fn eval(&self, event: &Event) -> Result<Op, String> {
        Ok(match self {
            OpExpr::Incr { negate, by } => {
                let by = by.eval(event)?;
                Op::Incr(if *negate {
                    by.checked_neg().ok_or("amount out of range")?
                } else {
                    by
                })
            }
            OpExpr::Max(a) => Op::Max(a.eval(event)?),
            OpExpr::Min(a) => Op::Min(a.eval(event)?),
            OpExpr::Set(t) => Op::Set(t.eval(event)?.into_bytes()),
            OpExpr::Members { kind, path } => {
                let v = path.require(event)?;
                let members = match &*v {
                    Json::Array(items) => items
                        .iter()
                        .map(|i| scalar(i, path).map(String::into_bytes))
                        .collect::<Result<Vec<_>, _>>()?,
                    one => vec![scalar(one, path)?.into_bytes()],
                };
                match kind {
                    MemberOp::Add => Op::Add(members),
                    MemberOp::Remove => Op::Remove(members),
                    MemberOp::PfAdd => Op::PfAdd(members),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
