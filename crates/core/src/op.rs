//! Operations on values, the context an update is applied in, and what applying
//! it did.
//!
//! Ops are the *input* vocabulary (what a client asks for); values are the
//! replicated *state*. Keeping them apart lets the storage layer pre-aggregate,
//! log and forward ops without knowing how each type folds them in.

use crate::value_type::ValueType;

/// Names one update of one producer, making its application idempotent.
///
/// A `writer` is a producer (a stream worker, a service), not a request: a
/// producer numbers its updates with increasing `seq`, and a retried update
/// keeps its id, so it is counted once whichever coordinator, replica, hint or
/// repair path delivers it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UpdateId {
    /// Stable name of the producer.
    pub writer: String,
    /// The producer's sequence number for this update; increasing per writer.
    pub seq: u64,
}

/// One operation a client asks to apply to a value.
///
/// Each op fits exactly the types listed in [`Op::fits`]; applying it to any
/// other type is refused with [`OpError::WrongOp`] rather than coerced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add to a counter or gcounter; a decrement is a negative `Incr`.
    /// A gcounter refuses negative amounts.
    Incr(i64),
    /// Raise a `max` value to at least this.
    Max(i64),
    /// Lower a `min` value to at most this.
    Min(i64),
    /// Write a register (last writer wins).
    Set(Vec<u8>),
    /// Add members to a set.
    Add(Vec<Vec<u8>>),
    /// Remove members from a set: removes the adds this replica has observed; a
    /// concurrent add it has not seen survives (add wins).
    Remove(Vec<Vec<u8>>),
    /// Add members to a HyperLogLog sketch.
    PfAdd(Vec<Vec<u8>>),
    /// Join a whole state into the key (PFMERGE, and later replica repair and batch
    /// import): fits the state's own type.
    Merge(Box<crate::value::Value>),
    /// Delete the key (Redis `DEL`), observed-remove: removes what the applying replica
    /// holds; updates it has not seen survive. Counters, registers and sets support it;
    /// max, min and hll refuse it ([`OpError::NotDeletable`]): their joins cannot tell a
    /// later update from one the delete saw.
    Delete,
}

impl Op {
    /// Stable lowercase name of the op, used in error messages and the APIs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Incr(_) => "incr",
            Op::Max(_) => "max",
            Op::Min(_) => "min",
            Op::Set(_) => "set",
            Op::Add(_) => "add",
            Op::Remove(_) => "remove",
            Op::PfAdd(_) => "pfadd",
            Op::Merge(_) => "merge",
            Op::Delete => "delete",
        }
    }

    /// Whether this op applies to values of type `ty`.
    ///
    /// `Incr` fits counter and gcounter (the sign check happens at apply time),
    /// `Max`→max, `Min`→min, `Set`→register, `Add`/`Remove`→set, `PfAdd`→hll.
    pub fn fits(&self, ty: ValueType) -> bool {
        self.fits_inner(ty)
    }

    /// The type a key takes when this op is its first write in a view that does not fix
    /// one type for all keys (the Redis default view): `Incr`→counter, `Max`→max,
    /// `Min`→min, `Set`→register, `Add`/`Remove`→set, `PfAdd`→hll.
    pub fn natural_type(&self) -> ValueType {
        match self {
            Op::Incr(_) => ValueType::Counter,
            Op::Max(_) => ValueType::Max,
            Op::Min(_) => ValueType::Min,
            Op::Set(_) => ValueType::Register,
            Op::Add(_) | Op::Remove(_) => ValueType::Set,
            Op::PfAdd(_) => ValueType::Hll,
            Op::Merge(state) => state.value_type(),
            // A delete of a key never written writes nothing; the type is moot.
            Op::Delete => ValueType::Counter,
        }
    }

    fn fits_inner(&self, ty: ValueType) -> bool {
        match self {
            Op::Merge(state) => return state.value_type() == ty,
            // Every type takes it; the ones that cannot honour it refuse it when applied,
            // with an error saying why (not as an op of another type).
            Op::Delete => return true,
            _ => {}
        }
        matches!(
            (self, ty),
            (Op::Incr(_), ValueType::Counter | ValueType::Gcounter)
                | (Op::Max(_), ValueType::Max)
                | (Op::Min(_), ValueType::Min)
                | (Op::Set(_), ValueType::Register)
                | (Op::Add(_) | Op::Remove(_), ValueType::Set)
                | (Op::PfAdd(_), ValueType::Hll)
        )
    }
}

/// Context the storage layer supplies for one update.
///
/// The core crate has no clock and no identity of its own: everything that
/// varies per node or per moment comes in here, which keeps apply a pure,
/// deterministic function (and testable without a cluster).
#[derive(Clone, Copy, Debug)]
pub struct ApplyCtx<'a> {
    /// Id of the coordinating replica: the slot of anonymous counter updates,
    /// the register tiebreak and the actor of anonymous set dots.
    pub node: &'a str,
    /// Producer id of this update, if it carries one.
    pub id: Option<&'a UpdateId>,
    /// Event time in microseconds since the Unix epoch (the register's LWW
    /// timestamp).
    pub ts_us: i64,
    /// A number unique per update on this node; storage guarantees it strictly
    /// increases per node. Used as the seq of anonymous set dots.
    pub unique: u64,
}

/// What applying an op did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The update is now reflected in the value.
    Applied,
    /// This update id was already reflected; nothing changed.
    Duplicate,
    /// The id's seq fell below the writer's window (already folded, or too
    /// late to tell): it is not counted and nothing changed.
    Stale,
    /// The update's event time is before its view's batch boundary: the batch view owns
    /// that time, so the update is not applied to realtime data (the master dataset has
    /// the event, and the next batch run counts it).
    Late,
}

/// Why an op was refused. A refused op leaves the value unchanged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpError {
    /// The op does not apply to this value type.
    #[error("operation '{op}' does not apply to a value of type {value_type}")]
    WrongOp {
        /// [`Op::name`] of the refused op.
        op: &'static str,
        /// Type of the value it was applied to.
        value_type: ValueType,
    },
    /// A gcounter only grows.
    #[error("a gcounter only grows: negative increments are refused")]
    NegativeIncrement,
    /// The key already holds the maximum number of writer slots.
    #[error("key already holds {limit} writer slots; updates from a new writer id are refused (send it without an id, or reuse writer ids)")]
    TooManyWriters {
        /// The per-key limit ([`MAX_WRITERS_PER_KEY`](crate::MAX_WRITERS_PER_KEY)).
        limit: usize,
    },
    /// The increment would take the counter's total past the i64 range (checked by
    /// [`Value::apply_reporting`](crate::Value::apply_reporting), which computes the total
    /// anyway; Redis answers the same error).
    #[error("increment or decrement would overflow")]
    Overflow,
    /// The update falls in an epoch that was dropped cluster-wide: nothing may bring its
    /// data back (writes, replicas' merges, hints and repairs are all refused).
    #[error("epoch {epoch} of this view was dropped; updates into it are refused")]
    EpochDropped {
        /// The dropped epoch's index.
        epoch: u64,
    },
    /// A delete of a key whose type cannot be deleted safely across replicas (max, min,
    /// hll: see [`Op::Delete`]).
    #[error("a {value_type} key cannot be deleted key by key (replicas could not tell later updates from deleted ones); drop its epoch, or FLUSHALL the Redis keyspace")]
    NotDeletable {
        /// The key's type.
        value_type: ValueType,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_matches_the_type_table() {
        let ops = [
            Op::Incr(1),
            Op::Max(1),
            Op::Min(1),
            Op::Set(vec![]),
            Op::Add(vec![]),
            Op::Remove(vec![]),
            Op::PfAdd(vec![]),
            Op::Delete,
        ];
        for op in &ops {
            let fitting: Vec<_> = ValueType::ALL.into_iter().filter(|t| op.fits(*t)).collect();
            let expected = match op {
                Op::Incr(_) => vec![ValueType::Counter, ValueType::Gcounter],
                Op::Max(_) => vec![ValueType::Max],
                Op::Min(_) => vec![ValueType::Min],
                Op::Set(_) => vec![ValueType::Register],
                Op::Add(_) | Op::Remove(_) => vec![ValueType::Set],
                Op::PfAdd(_) => vec![ValueType::Hll],
                Op::Merge(state) => vec![state.value_type()],
                Op::Delete => ValueType::ALL.to_vec(),
            };
            assert_eq!(fitting, expected, "{}", op.name());
        }
    }

    #[test]
    fn wrong_op_message() {
        let e = OpError::WrongOp {
            op: "pfadd",
            value_type: ValueType::Counter,
        };
        assert_eq!(
            e.to_string(),
            "operation 'pfadd' does not apply to a value of type counter"
        );
    }
}

mod wire {
    //! Binary form of an [`Op`], for the storage layer's update log: tag byte, then the
    //! operand (zigzag varints for integers, length-prefixed bytes, a value's canonical
    //! encoding for `Merge`).

    use super::Op;
    use crate::codec::{write_bytes, write_varint, write_zigzag, DecodeError, Reader};
    use crate::value::Value;

    const INCR: u8 = 1;
    const MAX: u8 = 2;
    const MIN: u8 = 3;
    const SET: u8 = 4;
    const ADD: u8 = 5;
    const REMOVE: u8 = 6;
    const PFADD: u8 = 7;
    const MERGE: u8 = 8;
    const DELETE: u8 = 9;

    impl Op {
        /// Appends the binary form of this op to `out`.
        pub fn encode_into(&self, out: &mut Vec<u8>) {
            let members = |out: &mut Vec<u8>, tag: u8, members: &[Vec<u8>]| {
                out.push(tag);
                write_varint(out, members.len() as u64);
                for m in members {
                    write_bytes(out, m);
                }
            };
            match self {
                Op::Incr(v) => {
                    out.push(INCR);
                    write_zigzag(out, *v);
                }
                Op::Max(v) => {
                    out.push(MAX);
                    write_zigzag(out, *v);
                }
                Op::Min(v) => {
                    out.push(MIN);
                    write_zigzag(out, *v);
                }
                Op::Set(v) => {
                    out.push(SET);
                    write_bytes(out, v);
                }
                Op::Add(m) => members(out, ADD, m),
                Op::Remove(m) => members(out, REMOVE, m),
                Op::PfAdd(m) => members(out, PFADD, m),
                Op::Merge(state) => {
                    out.push(MERGE);
                    write_bytes(out, &state.encode());
                }
                Op::Delete => out.push(DELETE),
            }
        }

        /// Reads an op written by [`Op::encode_into`] from `reader`.
        pub fn decode_from(reader: &mut Reader<'_>) -> Result<Op, DecodeError> {
            let members = |reader: &mut Reader<'_>| -> Result<Vec<Vec<u8>>, DecodeError> {
                let n = reader.read_len()?;
                (0..n)
                    .map(|_| reader.read_bytes().map(<[u8]>::to_vec))
                    .collect()
            };
            Ok(match reader.read_u8()? {
                INCR => Op::Incr(reader.read_zigzag()?),
                MAX => Op::Max(reader.read_zigzag()?),
                MIN => Op::Min(reader.read_zigzag()?),
                SET => Op::Set(reader.read_bytes()?.to_vec()),
                ADD => Op::Add(members(reader)?),
                REMOVE => Op::Remove(members(reader)?),
                PFADD => Op::PfAdd(members(reader)?),
                MERGE => Op::Merge(Box::new(Value::decode(reader.read_bytes()?)?)),
                DELETE => Op::Delete,
                tag => return Err(DecodeError::UnknownTag(tag)),
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::value_type::ValueType;

        #[test]
        fn ops_round_trip() {
            let ops = [
                Op::Incr(-5),
                Op::Max(i64::MAX),
                Op::Min(i64::MIN),
                Op::Set(b"v\r\n".to_vec()),
                Op::Add(vec![b"a".to_vec(), Vec::new()]),
                Op::Remove(vec![b"b".to_vec()]),
                Op::PfAdd(vec![b"x".to_vec(); 3]),
                Op::Merge(Box::new(Value::new(ValueType::Hll))),
                Op::Delete,
            ];
            for op in ops {
                let mut out = Vec::new();
                op.encode_into(&mut out);
                let mut reader = Reader::new(&out);
                assert_eq!(Op::decode_from(&mut reader).unwrap(), op);
                assert!(reader.is_empty());
                for cut in 0..out.len() {
                    assert!(Op::decode_from(&mut Reader::new(&out[..cut])).is_err());
                }
            }
        }
    }
}
