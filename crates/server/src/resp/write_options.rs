//! What a connection's requests carry beyond Redis: a producer id for its next write,
//! and the consistency of its reads and writes.
//!
//! - `ID writer seq [ts]` names the write command that follows it (`INCR`, `INCRBY`, `DECR`,
//!   `DECRBY`, `HINCRBY`, `SADD`, `SREM`, `PFADD`, `SET`) as update `seq` of producer
//!   `writer`, exactly as the HTTP API's `"id":{"writer":…,"seq":…}` (and `ts`, the
//!   event time in seconds, as its `"ts"`: give it for keys of declared views, so a retry
//!   after an epoch boundary lands in the same epoch; the implicit `redis` view has one
//!   generation and needs none): a client whose
//!   write failed or timed out retries it with the same id, through this node or any
//!   other, and it counts once. Without an id a retried `INCR` whose first attempt was
//!   applied counts twice (Redis's own behaviour). A pending id is taken by the very next
//!   command: a command that is not such a write is refused (not run), so an id never
//!   lands on the wrong command.
//! - `CONSISTENCY [one|quorum|all] [strict|sloppy]` sets how many owners this
//!   connection's writes wait for and its reads ask, and whether fallbacks count
//!   (sloppy); `CONSISTENCY` alone answers the current setting. The node's defaults
//!   (`--consistency`, `--quorum`) apply until it is set.

use speedlayer_api::{Consistency, QuorumMode};
use speedlayer_core::UpdateId;
use speedlayer_resp::Reply;

use bytes::Bytes;

use super::args::arity;
use super::session::{NextId, Session};

/// Longest producer name accepted (as for events and the HTTP API).
pub const MAX_WRITER_LEN: usize = speedlayer_events::event::MAX_WRITER_LEN;

/// The commands an `ID` may name.
pub const ID_TAKERS: &str = "INCR, INCRBY, DECR, DECRBY, HINCRBY, SADD, SREM, PFADD, SET";

/// `ID writer seq [ts]`: the next command's producer id, and its event time (seconds
/// since 1970) when given.
pub fn id(session: &mut Session, args: &[Bytes]) -> Reply {
    if !(3..=4).contains(&args.len()) {
        return arity("id");
    }
    let writer = match std::str::from_utf8(&args[1]) {
        Ok(w) if !w.is_empty() && w.len() <= MAX_WRITER_LEN => w,
        _ => {
            return Reply::error(format!(
                "ERR the writer must be 1 to {MAX_WRITER_LEN} bytes of UTF-8"
            ))
        }
    };
    let Some(seq) = std::str::from_utf8(&args[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Reply::error("ERR the sequence number must be an integer from 0 to 2^64-1");
    };
    let ts_us = match args.get(3) {
        None => None,
        Some(ts) => match std::str::from_utf8(ts)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|secs| secs.checked_mul(1_000_000))
        {
            Some(us) => Some(us),
            None => return Reply::error("ERR the event time must be whole seconds since 1970"),
        },
    };
    session.next_id = Some(NextId {
        id: UpdateId {
            writer: writer.to_owned(),
            seq,
        },
        ts_us,
    });
    Reply::ok()
}

/// The refusal of a command that followed an `ID` but takes none.
pub fn not_an_id_taker(name: &str) -> Reply {
    Reply::error(format!(
        "ERR ID must be followed by a write command ({ID_TAKERS}); {name} was not run and the id was dropped"
    ))
}

/// `CONSISTENCY [one|quorum|all] [strict|sloppy]`.
pub fn consistency(session: &mut Session, args: &[Bytes]) -> Reply {
    let current = session.options();
    if args.len() == 1 {
        return Reply::Bulk(Bytes::from(format!(
            "{} {}",
            current.consistency, current.quorum
        )));
    }
    if args.len() > 3 {
        return arity("consistency");
    }
    let mut options = current;
    for arg in &args[1..] {
        let word = String::from_utf8_lossy(arg).to_ascii_lowercase();
        if let Ok(level) = word.parse::<Consistency>() {
            options.consistency = level;
        } else if let Ok(mode) = word.parse::<QuorumMode>() {
            options.quorum = mode;
        } else {
            return Reply::error(format!(
                "ERR unknown consistency '{word}': one, quorum or all, then strict or sloppy"
            ));
        }
    }
    session.options = Some(options);
    Reply::ok()
}
