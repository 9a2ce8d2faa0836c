//! The update log: how a write is durable without rewriting its key's whole state.
//!
//! Each owner-shard round appends **one** record to the `update_log` keyspace: the
//! updates that changed state in that round (op, key, timestamps, id), a few bytes each.
//! The round is acknowledged once the journal holding that record is synced. Key states
//! are written to their epoch keyspaces only at a *checkpoint* (every few seconds, or
//! when the log grows, or before a range read or an epoch drop), in the same atomic batch
//! that removes the log records the states now include. A hot key updated 10,000 times
//! between checkpoints is written once; a 100k-member set is not re-encoded per `SADD`.
//!
//! Recovery replays, in round order, the records still in the log on top of the last
//! checkpointed states. Replay is exact because `Value::apply` is a deterministic
//! function of the prior state, the op and its context (node, timestamp, unique number),
//! all of which the record carries.
//!
//! Record key: shard index (u16 BE) ‖ round number (u64 BE), so records sort by shard,
//! then round. Every key is owned by exactly one shard, so replaying each shard's records
//! in order replays every key's updates in order, whatever the next run's shard count.

use std::collections::HashMap;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use speedlayer_core::codec::{write_bytes, write_str, write_varint, write_zigzag, Reader};
use speedlayer_core::{ApplyCtx, DecodeError, Epoch, Key, Op, UpdateId, Value, ValueType};

use crate::epochs::EpochKeyspaces;
use crate::error::Result;

/// Name of the log keyspace.
pub const LOG_KEYSPACE: &str = "update_log";

const APPLY: u8 = 1;
const DELETE: u8 = 2;

/// One state change, as logged.
#[derive(Clone, Debug, PartialEq)]
pub enum LoggedUpdate {
    /// An op applied to a key.
    Apply {
        /// View id.
        view_id: u32,
        /// Epoch of the key.
        epoch: Epoch,
        /// The key.
        key: Key,
        /// The op.
        op: Op,
        /// Event time (register timestamp).
        ts_us: i64,
        /// Node-local unique number (anonymous set dots).
        unique: u64,
        /// Producer id.
        id: Option<UpdateId>,
    },
    /// A key removed from one epoch (Redis DEL).
    Delete {
        /// View id.
        view_id: u32,
        /// Epoch of the key.
        epoch: Epoch,
        /// The key.
        key: Key,
    },
}

/// The log record key of `round` of `shard`.
pub fn record_key(shard: u16, round: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(&shard.to_be_bytes());
    key[2..].copy_from_slice(&round.to_be_bytes());
    key
}

/// Appends one update to a round record under construction.
pub fn encode_update(out: &mut Vec<u8>, update: &LoggedUpdate) {
    match update {
        LoggedUpdate::Apply {
            view_id,
            epoch,
            key,
            op,
            ts_us,
            unique,
            id,
        } => {
            out.push(APPLY);
            write_varint(out, u64::from(*view_id));
            write_varint(out, epoch.0);
            write_bytes(out, &key.encode());
            write_zigzag(out, *ts_us);
            write_varint(out, *unique);
            match id {
                None => out.push(0),
                Some(id) => {
                    out.push(1);
                    write_str(out, &id.writer);
                    write_varint(out, id.seq);
                }
            }
            op.encode_into(out);
        }
        LoggedUpdate::Delete {
            view_id,
            epoch,
            key,
        } => {
            out.push(DELETE);
            write_varint(out, u64::from(*view_id));
            write_varint(out, epoch.0);
            write_bytes(out, &key.encode());
        }
    }
}

/// Starts a round record: the node id whose slot anonymous counter updates used.
pub fn start_record(node_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_str(&mut out, node_id);
    out
}

/// Decodes a round record into its node id and updates.
pub fn decode_record(bytes: &[u8]) -> Result<(String, Vec<LoggedUpdate>), DecodeError> {
    let mut r = Reader::new(bytes);
    let node = r.read_str()?.to_string();
    let mut updates = Vec::new();
    while !r.is_empty() {
        let kind = r.read_u8()?;
        let view_id = u32::try_from(r.read_varint()?)
            .map_err(|_| DecodeError::Invalid("view id out of range"))?;
        let epoch = Epoch(r.read_varint()?);
        let key = Key::decode(r.read_bytes()?)?;
        updates.push(match kind {
            APPLY => {
                let ts_us = r.read_zigzag()?;
                let unique = r.read_varint()?;
                let id = match r.read_u8()? {
                    0 => None,
                    1 => Some(UpdateId {
                        writer: r.read_str()?.to_string(),
                        seq: r.read_varint()?,
                    }),
                    _ => return Err(DecodeError::Invalid("bad id flag")),
                };
                let op = Op::decode_from(&mut r)?;
                LoggedUpdate::Apply {
                    view_id,
                    epoch,
                    key,
                    op,
                    ts_us,
                    unique,
                    id,
                }
            }
            DELETE => LoggedUpdate::Delete {
                view_id,
                epoch,
                key,
            },
            tag => return Err(DecodeError::UnknownTag(tag)),
        });
    }
    Ok((node, updates))
}

/// Opens the log keyspace, whose memtable holds at most `memtable_bytes` (records stay
/// in it until it is flushed, even after a checkpoint removed them).
pub fn open(db: &Database, memtable_bytes: u64) -> Result<Keyspace> {
    Ok(db.keyspace(LOG_KEYSPACE, || {
        KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes)
    })?)
}

/// What a replay did: the number of updates replayed, and the (view id, epoch, key) of
/// every state it rewrote.
pub type Replayed = (usize, Vec<(u32, Epoch, Key)>);

/// Replays every record left in the log onto the checkpointed states, writes the results
/// and empties the log, atomically; returns what it replayed ([`Replayed`]). Runs at
/// open, before any shard starts. `type_of(view_id, op)` is the type a key the log
/// creates gets: its view's (a `gcounter` view's key created by `incr` is a gcounter, not
/// the op's natural `counter`), as the owner shard chose when it applied the op.
pub fn replay(
    db: &Database,
    log: &Keyspace,
    epochs: &EpochKeyspaces,
    type_of: &dyn Fn(u32, &Op) -> ValueType,
    dropped: &dyn Fn(u32, Epoch) -> bool,
) -> Result<Replayed> {
    let mut states: HashMap<(u32, Epoch, Key), (bool, Option<Value>)> = HashMap::new();
    let mut record_keys = Vec::new();
    let mut replayed = 0;
    for guard in log.iter() {
        let (record_key, bytes) = guard.into_inner()?;
        record_keys.push(record_key);
        let (node, updates) = decode_record(&bytes)?;
        for update in updates {
            replayed += 1;
            match update {
                LoggedUpdate::Apply {
                    view_id,
                    epoch,
                    key,
                    op,
                    ts_us,
                    unique,
                    id,
                } => {
                    if dropped(view_id, epoch) {
                        // Dropped cluster-wide after it was logged: it stays gone.
                        continue;
                    }
                    let slot = state(&mut states, epochs, view_id, epoch, key)?;
                    let ty = type_of(view_id, &op);
                    if op == Op::Delete && slot.is_none() {
                        continue;
                    }
                    // As the shard did (`type_of` differs from the state's type only in
                    // an `any` view).
                    if slot.as_ref().is_some_and(|v| v.yields_to(ty, &op)) {
                        *slot = None;
                    }
                    let value = slot.get_or_insert_with(|| Value::new(ty));
                    let ctx = ApplyCtx {
                        node: &node,
                        id: id.as_ref(),
                        ts_us,
                        unique,
                    };
                    if let Err(e) = value.apply(&op, &ctx) {
                        // Only ops that applied are logged; a refusal means the log and the
                        // checkpoint disagree. Keep going: the rest of the log is still good.
                        tracing::error!(error = %e, "replaying a logged update failed");
                    }
                }
                LoggedUpdate::Delete {
                    view_id,
                    epoch,
                    key,
                } => {
                    if dropped(view_id, epoch) {
                        continue;
                    }
                    *state(&mut states, epochs, view_id, epoch, key)? = None;
                }
            }
        }
    }
    if record_keys.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut batch = db.batch();
    let mut counts = crate::key_count::KeyCounts::default();
    for ((view_id, epoch, key), (counted, value)) in &states {
        let keyspace = epochs.get_or_create(*view_id, *epoch)?;
        crate::digest::write_state(
            &mut batch,
            &mut counts,
            (*view_id, *epoch),
            &keyspace,
            *counted,
            key.placement(),
            key,
            value.as_ref(),
        );
    }
    counts.write(&mut batch, crate::key_count::REPLAY_WRITER)?;
    for record_key in record_keys {
        batch.remove(log, record_key);
    }
    batch.commit()?;
    db.persist(PersistMode::SyncAll)?;
    Ok((replayed, states.into_keys().collect()))
}

/// The state being rebuilt for a key, read from its keyspace the first time (with
/// whether it counted as a key there).
fn state<'a>(
    states: &'a mut HashMap<(u32, Epoch, Key), (bool, Option<Value>)>,
    epochs: &EpochKeyspaces,
    view_id: u32,
    epoch: Epoch,
    key: Key,
) -> Result<&'a mut Option<Value>> {
    use std::collections::hash_map::Entry;
    Ok(match states.entry((view_id, epoch, key)) {
        Entry::Occupied(o) => &mut o.into_mut().1,
        Entry::Vacant(v) => {
            let keyspace = epochs.get_or_create(view_id, epoch)?;
            let stored = match keyspace.get(crate::state_key::encode(&v.key().2))? {
                Some(bytes) => Some(Value::decode(&bytes)?),
                None => None,
            };
            &mut v
                .insert((crate::key_count::counts(stored.as_ref()), stored))
                .1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let key = Key::new(b"p".to_vec(), b"c:1".to_vec()).unwrap();
        let updates = vec![
            LoggedUpdate::Apply {
                view_id: 3,
                epoch: Epoch(481_236),
                key: key.clone(),
                op: Op::Incr(-2),
                ts_us: 1_732_450_000_000_000,
                unique: 77,
                id: Some(UpdateId {
                    writer: "w1".into(),
                    seq: 9,
                }),
            },
            LoggedUpdate::Delete {
                view_id: 1,
                epoch: Epoch(0),
                key,
            },
        ];
        let mut record = start_record("n1");
        for u in &updates {
            encode_update(&mut record, u);
        }
        assert_eq!(decode_record(&record).unwrap(), ("n1".to_string(), updates));
        for cut in 1..record.len() {
            // Truncated records never decode into something else silently.
            if let Ok((_, got)) = decode_record(&record[..cut]) {
                assert!(got.len() < 2);
            }
        }
    }
}
