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
use serde::Deserialize;
use speedlayer_api::WriteOptions;
use speedlayer_events::Event;
use speedlayer_ingest::{Mode, Submitted};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::lines::{Line, LineReader};
use super::params::{query_error, Consistency, QuorumMode};
use super::AppState;

/// Events submitted together (one storage batch per view, one queue record).
pub const CHUNK_EVENTS: usize = 8192;
/// Longest accepted line.
pub use super::lines::MAX_LINE_BYTES;
/// Most line errors listed in a reply (the count is exact).
const MAX_ERRORS_LISTED: usize = 100;

/// Parameters of `POST /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Requested W (sync mode).
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
    /// Sloppy or strict quorum (sync mode).
    #[param(value_type = Option<String>)]
    pub quorum: Option<QuorumMode>,
    /// `sync` (default) or `async`.
    #[param(value_type = Option<String>)]
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
        t.late += s.late;
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
                body["late"] = s.late.into();
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
#[utoipa::path(post, path = "/v1/events", tag = "events", params(EventParams),
    request_body(content = String, content_type = "application/x-ndjson", description = "Events, one JSON object per line, streamed; each feeds the views whose mapping matches it"),
    responses((status = 200, description = "Events and derived updates counted, malformed lines listed", body = Object), (status = 429, description = "Event queue full (async): retry later", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Password required (--requirepass)", body = ErrorBody)))]
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
    let defaults = state.coordinator.defaults();
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
