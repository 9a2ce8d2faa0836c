//! `POST /v1/events`: raw events applied through the views' mappings.
//!
//! The body is NDJSON (one JSON event per line; a single event is a one-line body),
//! streamed: it is read and submitted in chunks of [`CHUNK_EVENTS`] events, so a body of
//! any size takes bounded memory. A body whose first non-blank byte is `[` is a JSON list
//! of events instead (read whole, up to the node's body limit).
//!
//! A malformed line (not JSON, not an object, a bad `ts` or `id`) is reported by line
//! number and the other lines are applied (422 `events_rejected`); with `atomic=true` the
//! whole body is checked first and nothing is applied if any line is malformed (400
//! `malformed_events`; the body is then bounded by the node's body limit).
//!
//! `mode=sync` (default) answers once every derived update is durable at the requested
//! consistency; `mode=async` once the events are durable in this node's queue (429
//! `queue_full` with `Retry-After` when the queue is over its limit).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use speedlayer_cluster::WriteOptions;
use speedlayer_events::Event;
use speedlayer_ingest::{Mode, Submitted};

use super::error::{ApiError, ApiResult};
use super::params::{query_error, Consistency, QuorumMode};
use super::AppState;

/// Events submitted together (one storage batch per view, one queue record).
pub const CHUNK_EVENTS: usize = 8192;
/// Longest accepted line.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Most line errors listed in a reply (the count is exact).
const MAX_ERRORS_LISTED: usize = 100;

/// Parameters of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Requested W (sync mode).
    pub consistency: Option<Consistency>,
    /// Sloppy or strict quorum (sync mode).
    pub quorum: Option<QuorumMode>,
    /// `sync` (default) or `async`.
    pub mode: Option<Mode>,
    /// Apply nothing if any line is malformed.
    #[serde(default)]
    pub atomic: bool,
}

/// A line the node could not read as an event.
#[derive(Debug, serde::Serialize)]
struct LineError {
    line: usize,
    error: String,
}

/// The reply, summed over chunks.
#[derive(Default)]
struct Tally {
    submitted: Submitted,
    rejected: usize,
    errors: Vec<LineError>,
    skips: Vec<serde_json::Value>,
}

impl Tally {
    fn reject(&mut self, line: usize, error: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_ERRORS_LISTED {
            self.errors.push(LineError { line, error });
        }
    }

    fn absorb(&mut self, s: Submitted, lines: &[usize]) {
        let t = &mut self.submitted;
        t.events += s.events;
        t.updates += s.updates;
        t.unmatched += s.unmatched;
        t.skipped += s.skipped;
        t.applied += s.applied;
        t.duplicate += s.duplicate;
        t.stale += s.stale;
        t.queued += s.queued;
        for skip in s.skips {
            if self.skips.len() < MAX_ERRORS_LISTED {
                self.skips.push(serde_json::json!({
                    "line": lines.get(skip.event).copied().unwrap_or(0),
                    "view": skip.view,
                    "reason": skip.reason,
                }));
            }
        }
        for refused in s.refused {
            if t.refused.len() < MAX_ERRORS_LISTED {
                t.refused.push(refused);
            }
        }
    }

    fn body(&self, mode: Mode) -> serde_json::Value {
        let s = &self.submitted;
        let mut body = serde_json::json!({
            "mode": mode,
            "events": s.events,
            "updates": s.updates,
            "unmatched": s.unmatched,
            "skipped": s.skipped,
            "rejected": self.rejected,
        });
        match mode {
            Mode::Sync => {
                body["applied"] = s.applied.into();
                body["duplicate"] = s.duplicate.into();
                body["stale"] = s.stale.into();
            }
            Mode::Async => body["queued"] = s.queued.into(),
        }
        if !self.skips.is_empty() {
            body["skips"] = self.skips.clone().into();
        }
        if !s.refused.is_empty() {
            body["refused"] = s.refused.clone().into();
        }
        if !self.errors.is_empty() {
            body["errors"] = serde_json::to_value(&self.errors).unwrap_or_default();
        }
        body
    }
}

/// Events parsed from a chunk of lines, with each one's line number.
#[derive(Default)]
struct Chunk {
    events: Vec<Event>,
    lines: Vec<usize>,
}

/// `POST /v1/events`.
pub async fn post(
    State(state): State<AppState>,
    params: Result<Query<EventParams>, QueryRejection>,
    body: Body,
) -> ApiResult<Response> {
    let Query(params) = params.map_err(query_error)?;
    if params.consistency == Some(Consistency::Local) {
        return Err(ApiError::bad_request(
            "invalid_consistency",
            "consistency=local is for reads; writes take one, quorum or all",
        ));
    }
    let defaults = state.cluster.defaults();
    let options = WriteOptions {
        consistency: params.consistency.unwrap_or(defaults.consistency),
        quorum: params.quorum.unwrap_or(defaults.quorum),
    };
    let mode = params.mode.unwrap_or_default();
    let max_body = state.max_body_bytes;
    let mut reader = LineReader::new(body);
    let mut tally = Tally::default();
    let arrival = speedlayer_ingest::ingest::now_us();

    let first = reader.peek_first_byte().await?;
    if first == Some(b'[') || params.atomic {
        // Read whole (bounded), check every event, then submit.
        let bytes = reader.read_all(max_body).await?;
        let mut chunk = Chunk::default();
        if first == Some(b'[') {
            let items: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request("malformed_json", format!("the event list: {e}"))
            })?;
            for (i, item) in items.into_iter().enumerate() {
                match Event::from_json(item, arrival) {
                    Ok(e) => {
                        chunk.events.push(e);
                        chunk.lines.push(i);
                    }
                    Err(e) => tally.reject(i, format!("event #{i}: {e}")),
                }
            }
        } else {
            for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
                parse_line(line, n + 1, arrival, &mut chunk, &mut tally);
            }
        }
        if params.atomic && tally.rejected > 0 {
            let mut body = tally.body(mode);
            body["error"] = "malformed_events".into();
            body["detail"] = format!(
                "{} malformed event(s); nothing was applied (atomic=true)",
                tally.rejected
            )
            .into();
            return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
        // One submit: with atomic=true in async mode, one queue record holds them all.
        submit(&state, &chunk, mode, options, &mut tally).await?;
    } else {
        let mut chunk = Chunk::default();
        let mut line_no = 0;
        while let Some(line) = reader.next_line().await? {
            line_no += 1;
            match line {
                Line::Text(start, end) => parse_line(
                    reader.bytes(start, end),
                    line_no,
                    arrival,
                    &mut chunk,
                    &mut tally,
                ),
                Line::TooLong => {
                    tally.reject(line_no, format!("line longer than {MAX_LINE_BYTES} bytes"))
                }
            }
            if chunk.events.len() >= CHUNK_EVENTS {
                submit(&state, &chunk, mode, options, &mut tally).await?;
                chunk = Chunk::default();
            }
        }
        submit(&state, &chunk, mode, options, &mut tally).await?;
    }
    let mut body = tally.body(mode);
    if tally.rejected == 0 {
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    body["error"] = "events_rejected".into();
    body["detail"] = format!(
        "{} malformed event(s) rejected; the others were {}",
        tally.rejected,
        if mode == Mode::Async {
            "queued"
        } else {
            "applied"
        }
    )
    .into();
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
}

fn parse_line(line: &[u8], line_no: usize, arrival: i64, chunk: &mut Chunk, tally: &mut Tally) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match Event::parse(line, arrival) {
        Ok(e) => {
            chunk.events.push(e);
            chunk.lines.push(line_no);
        }
        Err(e) => tally.reject(line_no, e.to_string()),
    }
}

async fn submit(
    state: &AppState,
    chunk: &Chunk,
    mode: Mode,
    options: WriteOptions,
    tally: &mut Tally,
) -> ApiResult<()> {
    if chunk.events.is_empty() {
        return Ok(());
    }
    match state.ingest.submit(&chunk.events, mode, options).await {
        Ok(s) => {
            tally.absorb(s, &chunk.lines);
            Ok(())
        }
        Err(e) => {
            let done = tally.submitted.events;
            let mut error = ApiError::from(e);
            if done > 0 {
                error.detail = format!(
                    "{} (the {done} event(s) before line {} were {})",
                    error.detail,
                    chunk.lines.first().copied().unwrap_or(0),
                    if mode == Mode::Async {
                        "queued"
                    } else {
                        "applied"
                    }
                );
            }
            Err(error)
        }
    }
}

enum Line {
    /// A line: `start..end` of the reader's buffer, valid until the next read.
    Text(usize, usize),
    TooLong,
}

impl Line {
    /// The line at `start..end`, or `TooLong` past [`MAX_LINE_BYTES`].
    fn new(start: usize, end: usize) -> Line {
        if end - start > MAX_LINE_BYTES {
            Line::TooLong
        } else {
            Line::Text(start, end)
        }
    }
}

/// Splits a streamed body into lines without holding more than one line (plus one
/// network chunk) in memory, and without copying lines out.
struct LineReader {
    stream: axum::body::BodyDataStream,
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    pos: usize,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    done: bool,
}

impl LineReader {
    fn new(body: Body) -> Self {
        LineReader {
            stream: body.into_data_stream(),
            buf: Vec::new(),
            pos: 0,
            skipping: false,
            done: false,
        }
    }

    async fn fill(&mut self) -> ApiResult<bool> {
        match self.stream.next().await {
            Some(Ok(bytes)) => {
                if self.pos > 0 {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                self.buf.extend_from_slice(&bytes);
                Ok(true)
            }
            Some(Err(e)) => Err(ApiError::bad_request(
                "unreadable_body",
                format!("reading the body failed: {e}"),
            )),
            None => {
                self.done = true;
                Ok(false)
            }
        }
    }

    async fn peek_first_byte(&mut self) -> ApiResult<Option<u8>> {
        loop {
            if let Some(b) = self.buf.iter().find(|b| !b.is_ascii_whitespace()) {
                return Ok(Some(*b));
            }
            if self.done || !self.fill().await? {
                return Ok(None);
            }
        }
    }

    async fn read_all(&mut self, limit: usize) -> ApiResult<Vec<u8>> {
        while !self.done {
            if self.buf.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "a JSON list or an atomic body is read whole and may hold at most {limit} bytes; send NDJSON without atomic=true to stream any size"
                    ),
                ));
            }
            self.fill().await?;
        }
        Ok(std::mem::take(&mut self.buf))
    }

    fn bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.buf[start..end]
    }

    async fn next_line(&mut self) -> ApiResult<Option<Line>> {
        let mut scanned = self.pos;
        loop {
            if let Some(offset) = self.buf[scanned..].iter().position(|b| *b == b'\n') {
                let (start, end) = (self.pos, scanned + offset);
                self.pos = end + 1;
                if std::mem::take(&mut self.skipping) {
                    scanned = self.pos;
                    continue;
                }
                return Ok(Some(Line::new(start, end)));
            }
            if self.buf.len() - self.pos > MAX_LINE_BYTES {
                self.buf.clear();
                self.pos = 0;
                if !self.skipping {
                    self.skipping = true;
                    return Ok(Some(Line::TooLong));
                }
            }
            let kept = self.buf.len() - self.pos;
            if self.done || !self.fill().await? {
                if self.pos >= self.buf.len() || std::mem::take(&mut self.skipping) {
                    return Ok(None);
                }
                let (start, end) = (self.pos, self.buf.len());
                self.pos = end;
                return Ok(Some(Line::new(start, end)));
            }
            // `fill` moved the unread bytes to the front; resume after what was scanned.
            scanned = kept;
        }
    }
}
