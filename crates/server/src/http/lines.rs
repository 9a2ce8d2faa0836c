//! Streamed NDJSON bodies, line by line: what `POST /v1/events` and batch imports read.
//!
//! A body of any size is read with bounded memory: at most one line (up to
//! [`MAX_LINE_BYTES`]) plus one network chunk is held, and lines are not copied out.

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;

use super::error::{ApiError, ApiResult};

/// Longest accepted line; a longer one is reported as [`Line::TooLong`] and skipped.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One line of a streamed body.
pub(crate) enum Line {
    /// A line: `start..end` of the reader's buffer, valid until the next read.
    Text(usize, usize),
    /// A line over [`MAX_LINE_BYTES`], skipped.
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
pub(crate) struct LineReader {
    stream: axum::body::BodyDataStream,
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    pos: usize,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    done: bool,
}

impl LineReader {
    /// Reads `body`.
    pub(crate) fn new(body: Body) -> Self {
        LineReader {
            stream: body.into_data_stream(),
            buf: Vec::new(),
            pos: 0,
            skipping: false,
            done: false,
        }
    }

    pub(crate) async fn fill(&mut self) -> ApiResult<bool> {
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

    /// The first non-blank byte of the body, without consuming it.
    pub(crate) async fn peek_first_byte(&mut self) -> ApiResult<Option<u8>> {
        loop {
            if let Some(b) = self.buf.iter().find(|b| !b.is_ascii_whitespace()) {
                return Ok(Some(*b));
            }
            if self.done || !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// The rest of the body, whole, up to `limit` bytes (413 past it).
    pub(crate) async fn read_all(&mut self, limit: usize) -> ApiResult<Vec<u8>> {
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

    /// The bytes of a [`Line::Text`].
    pub(crate) fn bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.buf[start..end]
    }

    /// The next line, `None` at the end of the body.
    pub(crate) async fn next_line(&mut self) -> ApiResult<Option<Line>> {
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
