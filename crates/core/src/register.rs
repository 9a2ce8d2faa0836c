//! Last-writer-wins register.
//!
//! Concurrent writes are ordered by `(timestamp, actor, value)`: the event time
//! decides, then the writer (or coordinating node) breaks ties, and the value
//! bytes break the last tie so that two different writes can never compare
//! equal. That total order makes the join a plain max, hence commutative,
//! associative and idempotent, and re-applying a write changes nothing.

use crate::codec::{write_bytes, write_str, write_zigzag, DecodeError, Reader};
use crate::op::ApplyCtx;

/// One write. Field order is the comparison order, so the derived `Ord` is the
/// LWW order. A delete is a write of no value (`None` sorts first, so a value written
/// with the same stamp wins).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Write {
    ts_us: i64,
    actor: String,
    value: Option<Vec<u8>>,
}

/// A byte string where the latest write wins.
///
/// Invariant: holds the maximum, by `(ts_us, actor, value)`, of every write
/// applied or merged in; empty (bottom) if there was none.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Register {
    latest: Option<Write>,
}

impl Register {
    /// The current value, or `None` if never written.
    pub fn get(&self) -> Option<&[u8]> {
        self.latest.as_ref().and_then(|w| w.value.as_deref())
    }

    /// Approximate heap bytes this state holds ([`crate::footprint`]).
    pub fn heap_bytes(&self) -> usize {
        use crate::footprint::block;
        self.latest.as_ref().map_or(0, |w| {
            block(w.actor.len()) + w.value.as_ref().map_or(0, |v| block(v.len()))
        })
    }

    /// Event time of the winning write, in microseconds since the Unix epoch.
    pub fn timestamp_us(&self) -> Option<i64> {
        self.latest.as_ref().map(|w| w.ts_us)
    }

    /// Writer id (or node id, for writes without an id) of the winning write.
    pub fn actor(&self) -> Option<&str> {
        self.latest.as_ref().map(|w| w.actor.as_str())
    }

    /// Offers the write `(ctx.ts_us, actor, value)`, where the actor is the
    /// update's writer if it has an id, else `ctx.node`. It wins only if it is
    /// greater than the current write. Returns whether the register changed.
    pub fn set(&mut self, value: &[u8], ctx: &ApplyCtx<'_>) -> bool {
        self.offer(Some(value), ctx)
    }

    /// Deletes the value it holds (observed-remove): a write of no value stamped at
    /// `ctx.ts_us`, or just after the write it removes if that is later, so the delete
    /// always beats what it saw; a write it had not seen wins if stamped later. Returns
    /// whether the register held a value.
    pub fn clear(&mut self, ctx: &ApplyCtx<'_>) -> bool {
        let Some(seen) = self.latest.as_ref().filter(|w| w.value.is_some()) else {
            return false;
        };
        let ts_us = ctx.ts_us.max(seen.ts_us.saturating_add(1));
        self.offer(None, &ApplyCtx { ts_us, ..*ctx })
    }

    fn offer(&mut self, value: Option<&[u8]>, ctx: &ApplyCtx<'_>) -> bool {
        let actor = ctx.id.map_or(ctx.node, |id| id.writer.as_str());
        let wins = match &self.latest {
            None => true,
            Some(cur) => {
                (ctx.ts_us, actor, value) > (cur.ts_us, cur.actor.as_str(), cur.value.as_deref())
            }
        };
        if wins {
            self.latest = Some(Write {
                ts_us: ctx.ts_us,
                actor: actor.to_owned(),
                value: value.map(<[u8]>::to_vec),
            });
        }
        wins
    }

    /// Join: keeps the greater write.
    pub fn merge(&mut self, other: &Register) {
        if other.latest > self.latest {
            self.latest.clone_from(&other.latest);
        }
    }

    /// `0` for bottom, else `1` (a value) or `2` (a delete), zigzag timestamp, actor,
    /// and for `1` the value.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match &self.latest {
            None => out.push(0),
            Some(w) => {
                out.push(if w.value.is_some() { 1 } else { 2 });
                write_zigzag(out, w.ts_us);
                write_str(out, &w.actor);
                if let Some(value) = &w.value {
                    write_bytes(out, value);
                }
            }
        }
    }

    /// Inverse of [`encode_into`](Self::encode_into).
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Register, DecodeError> {
        match r.read_u8()? {
            0 => Ok(Register::default()),
            flag @ (1 | 2) => {
                let ts_us = r.read_zigzag()?;
                let actor = r.read_str()?.to_owned();
                let value = if flag == 1 {
                    Some(r.read_bytes()?.to_vec())
                } else {
                    None
                };
                Ok(Register {
                    latest: Some(Write {
                        ts_us,
                        actor,
                        value,
                    }),
                })
            }
            _ => Err(DecodeError::Invalid(
                "register presence flag is not 0, 1 or 2",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::UpdateId;

    fn ctx<'a>(node: &'a str, id: Option<&'a UpdateId>, ts_us: i64) -> ApplyCtx<'a> {
        ApplyCtx {
            node,
            id,
            ts_us,
            unique: 0,
        }
    }

    #[test]
    fn later_timestamp_wins_then_actor_then_value() {
        let mut r = Register::default();
        assert!(r.set(b"a", &ctx("n1", None, 10)));
        assert!(!r.set(b"old", &ctx("n9", None, 9)));
        assert!(r.set(b"b", &ctx("n2", None, 10)));
        assert_eq!(r.get(), Some(&b"b"[..]));
        assert!(r.set(b"c", &ctx("n2", None, 10)));
        assert!(!r.set(b"c", &ctx("n2", None, 10)));
        let id = UpdateId {
            writer: "w".into(),
            seq: 1,
        };
        assert!(r.set(b"d", &ctx("n1", Some(&id), 10)));
        assert_eq!(r.actor(), Some("w"));
        assert_eq!(r.timestamp_us(), Some(10));
    }

    #[test]
    fn merge_keeps_the_greater_write() {
        let mut a = Register::default();
        a.set(b"x", &ctx("n1", None, 5));
        let mut b = Register::default();
        b.set(b"y", &ctx("n2", None, 5));
        let mut ab = a.clone();
        ab.merge(&b);
        b.merge(&a);
        assert_eq!(ab, b);
        assert_eq!(ab.get(), Some(&b"y"[..]));
    }
}
