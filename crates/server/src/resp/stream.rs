//! `XADD events …`: Redis stream producers feed events into the views' mappings.
//!
//! `XADD events [NOMKSTREAM] [MAXLEN|MINID [=|~] n [LIMIT c]] <*|id> field value …` turns
//! the field/value pairs into one event (every value a string; `ts` may be a numeric
//! string of seconds; fields `writer` and `seq` together are the event's id) and submits
//! it like `POST /v1/events`. The stream key picks the mode: `events` is sync (the reply
//! comes once the derived updates are durable at the node's default consistency),
//! `events:async` queues. Trimming options are accepted and ignored: nothing is kept as
//! a stream, the events become view updates. Runs of XADD in a pipeline are submitted
//! together (one storage batch). The reply is the entry id: the given one, or
//! `<milliseconds>-<n>` for `*`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::{Map, Value as Json};
use speedlayer_events::Event;
use speedlayer_ingest::{IngestError, Mode};
use speedlayer_resp::Reply;

use super::args::request_error;
use super::session::Session;

/// Stream key of synchronous events.
pub const SYNC_STREAM: &[u8] = b"events";
/// Stream key of queued (async) events.
pub const ASYNC_STREAM: &[u8] = b"events:async";

/// A parsed XADD waiting for its pipeline's submit.
pub struct PendingEvent {
    /// Sync or async.
    pub mode: Mode,
    /// The event.
    pub event: Event,
    /// The entry id to answer.
    pub entry_id: Bytes,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Parses an XADD command; `Err` is the reply to send at once.
pub fn parse(args: &[Bytes]) -> Result<PendingEvent, Reply> {
    let arity = || Reply::error("ERR wrong number of arguments for 'xadd' command");
    let key = args.get(1).ok_or_else(arity)?;
    let mode = match &key[..] {
        k if k == SYNC_STREAM => Mode::Sync,
        k if k == ASYNC_STREAM => Mode::Async,
        _ => {
            return Err(Reply::error(
                "ERR speedlayer takes XADD only on the stream 'events' (sync) or 'events:async' (queued)",
            ))
        }
    };
    let mut i = 2;
    loop {
        let Some(arg) = args.get(i) else {
            return Err(arity());
        };
        let upper = arg.to_ascii_uppercase();
        match &upper[..] {
            b"NOMKSTREAM" => i += 1,
            b"MAXLEN" | b"MINID" => {
                i += 1;
                if matches!(args.get(i).map(|a| &a[..]), Some(b"=" | b"~")) {
                    i += 1;
                }
                i += 1;
                if args
                    .get(i)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"LIMIT"))
                {
                    i += 2;
                }
            }
            _ => break,
        }
    }
    let id_arg = args.get(i).ok_or_else(arity)?;
    let entry_id = if &id_arg[..] == b"*" {
        let ms = speedlayer_ingest::ingest::now_us() / 1000;
        Bytes::from(format!("{ms}-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed)))
    } else if valid_entry_id(id_arg) {
        id_arg.clone()
    } else {
        return Err(Reply::error(
            "ERR Invalid stream ID specified as stream command argument",
        ));
    };
    let pairs = &args[i + 1..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(arity());
    }
    let mut fields = Map::new();
    for pair in pairs.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]).into_owned();
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        fields.insert(name, Json::String(value));
    }
    // Both fields make the id; one alone is an ordinary field.
    if fields.contains_key("writer") && fields.contains_key("seq") {
        let writer = fields.remove("writer");
        let seq = fields.remove("seq");
        fields.insert(
            "id".into(),
            serde_json::json!({ "writer": writer, "seq": seq }),
        );
    }
    let event = Event::from_fields(fields, speedlayer_ingest::ingest::now_us())
        .map_err(|e| Reply::error(format!("ERR invalid event: {e}")))?;
    Ok(PendingEvent {
        mode,
        event,
        entry_id,
    })
}

fn valid_entry_id(id: &[u8]) -> bool {
    let text = String::from_utf8_lossy(id);
    let mut parts = text.splitn(2, '-');
    let ms_ok = parts.next().is_some_and(|p| p.parse::<u64>().is_ok());
    let seq_ok = parts
        .next()
        .is_none_or(|p| p == "*" || p.parse::<u64>().is_ok());
    ms_ok && seq_ok
}

/// Submits a run of XADDs (grouped by mode) and fills their replies.
pub async fn flush(
    session: &Session,
    pending: &mut Vec<(usize, PendingEvent)>,
    replies: &mut [Option<Reply>],
) {
    for mode in [Mode::Sync, Mode::Async] {
        let (group, rest): (Vec<_>, Vec<_>) = std::mem::take(pending)
            .into_iter()
            .partition(|(_, p)| p.mode == mode);
        *pending = rest;
        if group.is_empty() {
            continue;
        }
        let (answers, events): (Vec<(usize, Bytes)>, Vec<Event>) = group
            .into_iter()
            .map(|(slot, p)| ((slot, p.entry_id), p.event))
            .unzip();
        let ingest = &session.shared.ingest;
        let options = session.options();
        let reply_of = |e: &IngestError| match e {
            IngestError::Request(e) => request_error(e),
            e @ IngestError::QueueFull { .. } => Reply::error(format!("TRYAGAIN {e}")),
        };
        match ingest.submit(&events, mode, options).await {
            Ok(_) => {
                for (slot, id) in answers {
                    replies[slot] = Some(Reply::Bulk(id));
                }
            }
            Err(e) => {
                let reply = reply_of(&e);
                for (slot, _) in answers {
                    replies[slot] = Some(reply.clone());
                }
            }
        }
    }
}
