//! The event queue: where `mode=async` events wait, durably, until a worker applies them.
//!
//! The queue is a keyspace of *records* in the node's journaled LSM. A record holds the
//! updates that one submit derived from its events, already mapped (so the submitter
//! hears about unmatched or skipped events at once, and a mapping declared later does
//! not change what was queued). Records are numbered by **event sequence**: a record of
//! `n` events starting at `first` covers events `first .. first + n`, and the next record
//! starts at `first + n`. The worker gives an event without an id the id
//! `(q.<node>, first + i)`, dense and increasing in queue order, which is what makes a
//! record re-applied after a crash count once (see `speedlayer_core::Counter`'s window).
//!
//! Invariants:
//! - [`EventQueue::append`] returns only after the record is durable (journal synced,
//!   shared with the shards' group commit), so an acknowledged event survives SIGKILL.
//! - Records are numbered and inserted under one lock, and [`EventQueue::peek`] returns
//!   only records whose sync completed, in order, with no gaps: a worker never applies
//!   event `s + 1` of the queue writer before event `s`.
//! - A record leaves the queue ([`EventQueue::remove_through`]) only after the worker
//!   applied it durably. Removal need not be synced: if it is lost in a crash, the
//!   record is applied again, and its ids make that a no-op.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fjall::{Keyspace, KeyspaceCreateOptions};
use speedlayer_core::codec::{write_bytes, write_str, write_varint, write_zigzag, Reader};
use speedlayer_core::{DecodeError, Key, Op, UpdateId};
use tokio::sync::{oneshot, Notify};

use crate::error::{Result, StoreError};
use crate::group_commit::{GroupCommit, PendingAcks};
use speedlayer_api::{EventLog, Update};
pub use speedlayer_api::{QueuedRecord, QueuedView};

const KEYSPACE: &str = "event_queue";
/// Key of the next event sequence (record keys are 8 bytes, so this one never collides).
/// Kept so sequences never restart, even when the queue was empty at a restart: a queue
/// id handed out twice would be taken for a duplicate and not counted.
const NEXT_KEY: &[u8] = b"next";
const HEADER: usize = 16;

impl QueueState {
    /// Moves every unsynced record up to `first` into the durable index (a sync covers
    /// everything inserted before it started).
    fn mark_synced(&self, first: u64) {
        let mut index = self.lock();
        let mut added = 0;
        while let Some(&(f, n, at)) = index.unsynced.front() {
            if f > first {
                break;
            }
            index.unsynced.pop_front();
            index.records.push_back((f, n, at));
            added += n;
        }
        // Under the lock, so a concurrent removal never counts below zero.
        self.events.fetch_add(added, Ordering::AcqRel);
        drop(index);
        if added > 0 {
            self.ready.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the queue holds, in order: `(first, events, enqueued_us)` of each durable record.
struct Index {
    records: VecDeque<(u64, u64, i64)>,
    /// Next event sequence to hand out.
    next: u64,
    /// Records appended but not yet synced: `(first, events, enqueued_us)`, in order.
    unsynced: VecDeque<(u64, u64, i64)>,
}

/// The node's durable queue of async events.
pub struct EventQueue {
    db: fjall::Database,
    keyspace: Keyspace,
    commit: Mutex<Option<GroupCommit>>,
    /// What the queue holds; shared with the sync callbacks that make records durable.
    state: std::sync::Arc<QueueState>,
}

/// The queue's index and counters, updated by appends, removals and sync completions.
struct QueueState {
    index: Mutex<Index>,
    /// Events in durable records not yet removed.
    events: AtomicU64,
    /// Woken when a record becomes durable.
    ready: Notify,
}

impl EventQueue {
    /// Opens the queue keyspace and indexes the records it holds (a restart resumes where
    /// the previous run stopped).
    pub(crate) fn open(db: &fjall::Database, commit: GroupCommit) -> Result<EventQueue> {
        let keyspace = db.keyspace(KEYSPACE, KeyspaceCreateOptions::default)?;
        let mut records = VecDeque::new();
        let mut next = 0;
        let mut events = 0;
        if let Some(stored) = keyspace.get(NEXT_KEY)? {
            next = decode_key(&stored).unwrap_or(0);
        }
        for guard in keyspace.iter() {
            let (key, value) = guard.into_inner()?;
            if &*key == NEXT_KEY {
                continue;
            }
            let (Some(first), Some((count, enqueued_us))) = (decode_key(&key), header(&value))
            else {
                tracing::warn!("ignoring an undecodable event queue record");
                continue;
            };
            records.push_back((first, count, enqueued_us));
            next = next.max(first + count);
            events += count;
        }
        Ok(EventQueue {
            db: db.clone(),
            keyspace,
            commit: Mutex::new(Some(commit)),
            state: std::sync::Arc::new(QueueState {
                index: Mutex::new(Index {
                    records,
                    next,
                    unsynced: VecDeque::new(),
                }),
                events: AtomicU64::new(events),
                ready: Notify::new(),
            }),
        })
    }

    /// Stops using the group commit (the store is closing), so its thread can end.
    pub(crate) fn close(&self) {
        self.commit.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Appends a record of `events` events holding `views`' updates, durably; returns the event
    /// sequence of its first event.
    pub async fn append(&self, events: u64, views: &[QueuedView], now_us: i64) -> Result<u64> {
        let events = events.max(1);
        let count: usize = views.iter().map(|v| v.updates.len()).sum();
        let mut value = Vec::with_capacity(HEADER + count * 48);
        value.extend_from_slice(&events.to_be_bytes());
        value.extend_from_slice(&now_us.to_be_bytes());
        encode_views(&mut value, views);
        let commit = self
            .commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StoreError::ShuttingDown)?;
        if commit.is_failed() {
            return Err(StoreError::Failed);
        }
        let first = {
            let mut index = self.state.lock();
            let first = index.next;
            let mut batch = self.db.batch();
            batch.insert(&self.keyspace, first.to_be_bytes(), value);
            batch.insert(&self.keyspace, NEXT_KEY, (first + events).to_be_bytes());
            batch.commit()?;
            index.next = first + events;
            index.unsynced.push_back((first, events, now_us));
            first
        };
        let (tx, rx) = oneshot::channel();
        let queue = self.state.clone();
        commit.after_sync(PendingAcks {
            updates: 0,
            deliver: Box::new(move |synced| {
                if synced.is_ok() {
                    queue.mark_synced(first);
                }
                let _ = tx.send(synced);
            }),
        });
        rx.await.map_err(|_| StoreError::ShuttingDown)??;
        Ok(first)
    }

    /// Events waiting (durable, not yet applied).
    pub fn len(&self) -> u64 {
        self.state.events.load(Ordering::Acquire)
    }

    /// True when no durable record waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the oldest waiting record was appended.
    pub fn oldest_us(&self) -> Option<i64> {
        self.state.lock().records.front().map(|r| r.2)
    }

    /// Age in seconds, at `now_us`, of the oldest waiting record (0 when none waits): the
    /// queue's lag.
    pub fn lag_seconds(&self, now_us: i64) -> f64 {
        self.oldest_us()
            .map(|at| (now_us - at).max(0) as f64 / 1e6)
            .unwrap_or(0.0)
    }

    /// Waits until a record may be waiting (returns at once if one is).
    pub async fn wait_ready(&self) {
        if !self.is_empty() {
            return;
        }
        self.state.ready.notified().await;
    }

    /// The oldest durable records, in order, up to about `max_events` events (at least one
    /// record when any waits).
    pub fn peek(&self, max_events: u64) -> Result<Vec<QueuedRecord>> {
        let wanted: Vec<(u64, u64, i64)> = {
            let index = self.state.lock();
            let mut total = 0;
            index
                .records
                .iter()
                .take_while(|r| {
                    let take = total == 0 || total + r.1 <= max_events;
                    total += r.1;
                    take
                })
                .copied()
                .collect()
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (first, events, enqueued_us) in wanted {
            let Some(value) = self.keyspace.get(first.to_be_bytes())? else {
                return Err(StoreError::Corrupt(DecodeError::Invalid(
                    "an indexed event queue record is missing",
                )));
            };
            let views = decode_views(&value[HEADER.min(value.len())..])?;
            out.push(QueuedRecord {
                first,
                events,
                enqueued_us,
                views,
            });
        }
        Ok(out)
    }

    /// Removes every record starting at or before `first` (applied durably by the caller).
    pub fn remove_through(&self, first: u64) -> Result<()> {
        let mut removed = 0;
        let mut index = self.state.lock();
        while let Some(&(f, n, _)) = index.records.front() {
            if f > first {
                break;
            }
            self.keyspace.remove(f.to_be_bytes())?;
            index.records.pop_front();
            removed += n;
        }
        self.state.events.fetch_sub(removed, Ordering::AcqRel);
        Ok(())
    }
}

fn decode_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn header(value: &[u8]) -> Option<(u64, i64)> {
    let events = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let at = i64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((events, at))
}

/// Encodes queued views: each view's name, then its updates.
pub fn encode_views(out: &mut Vec<u8>, views: &[QueuedView]) {
    for group in views {
        out.push(1);
        write_str(out, &group.view);
        for (update, event) in &group.updates {
            out.push(2);
            write_varint(out, u64::from(*event));
            write_bytes(out, &update.key.encode());
            write_zigzag(out, update.ts_us.unwrap_or(0));
            match &update.id {
                None => out.push(0),
                Some(id) => {
                    out.push(1);
                    write_str(out, &id.writer);
                    write_varint(out, id.seq);
                }
            }
            update.op.encode_into(out);
        }
    }
}

/// Inverse of [`encode_views`]; total on arbitrary bytes.
pub fn decode_views(bytes: &[u8]) -> std::result::Result<Vec<QueuedView>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut out: Vec<QueuedView> = Vec::new();
    while !r.is_empty() {
        match r.read_u8()? {
            1 => out.push(QueuedView {
                view: r.read_str()?.to_string(),
                updates: Vec::new(),
            }),
            2 => {
                let group = out
                    .last_mut()
                    .ok_or(DecodeError::Invalid("update before its view"))?;
                let event = u32::try_from(r.read_varint()?)
                    .map_err(|_| DecodeError::Invalid("event index out of range"))?;
                let key = Key::decode(r.read_bytes()?)?;
                let ts_us = r.read_zigzag()?;
                let id = match r.read_u8()? {
                    0 => None,
                    1 => Some(UpdateId {
                        writer: r.read_str()?.to_string(),
                        seq: r.read_varint()?,
                    }),
                    _ => return Err(DecodeError::Invalid("bad id flag")),
                };
                let op = Op::decode_from(&mut r)?;
                let update = Update {
                    key,
                    op,
                    ts_us: Some(ts_us),
                    id,
                };
                group.updates.push((update, event));
            }
            tag => return Err(DecodeError::UnknownTag(tag)),
        }
    }
    Ok(out)
}

/// Ingest holds the queue only through [`EventLog`] (it cannot name the store).
#[async_trait::async_trait]
impl EventLog for EventQueue {
    async fn append(
        &self,
        events: u64,
        views: &[QueuedView],
        now_us: i64,
    ) -> std::result::Result<u64, speedlayer_api::Error> {
        Ok(EventQueue::append(self, events, views, now_us).await?)
    }

    fn len(&self) -> u64 {
        EventQueue::len(self)
    }

    fn lag_seconds(&self, now_us: i64) -> f64 {
        EventQueue::lag_seconds(self, now_us)
    }

    async fn wait_ready(&self) {
        EventQueue::wait_ready(self).await
    }

    fn peek(
        &self,
        max_events: u64,
    ) -> std::result::Result<Vec<QueuedRecord>, speedlayer_api::Error> {
        Ok(EventQueue::peek(self, max_events)?)
    }

    fn remove_through(&self, first: u64) -> std::result::Result<(), speedlayer_api::Error> {
        Ok(EventQueue::remove_through(self, first)?)
    }
}
