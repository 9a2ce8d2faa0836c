//! The single error type of the codec.

use std::fmt;

/// Why a byte stream is not valid RESP.
///
/// Every variant means the stream is unusable: the codec cannot resynchronise
/// on a frame boundary, so the server answers `-ERR Protocol error: <Display>`
/// and closes the connection. Display texts mirror Redis' own wording so that
/// clients and operators see familiar messages; variants that Redis does not
/// distinguish (e.g. negative vs. oversized bulk length) share a text but keep
/// their details in the variant for logging.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A `*<n>` header whose count is not a canonical decimal integer.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A multibulk request or reply aggregate longer than [`crate::Limits::max_args`].
    #[error("invalid multibulk length")]
    TooManyArgs {
        /// Announced element count.
        count: u64,
        /// Configured limit.
        limit: usize,
    },
    /// A `$<n>` header whose length is negative (where not allowed) or not a
    /// canonical decimal integer.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A bulk longer than [`crate::Limits::max_bulk_len`].
    #[error("invalid bulk length")]
    BulkTooLarge {
        /// Announced length in bytes.
        len: u64,
        /// Configured limit.
        limit: usize,
    },
    /// An element of a request array that is not a bulk string (this includes
    /// nested arrays, which clients may not send).
    #[error("expected '$', got '{}'", ByteDisplay(*.0))]
    ExpectedBulk(u8),
    /// A `*` header line that is not terminated within its maximum length.
    #[error("too big mbulk count string")]
    MultibulkCountTooLong,
    /// A `$` header line that is not terminated within its maximum length.
    #[error("too big bulk count string")]
    BulkCountTooLong,
    /// An inline command line longer than [`crate::Limits::max_inline_len`].
    #[error("too big inline request")]
    InlineTooLong,
    /// An inline command with an unterminated quote, or a closing quote not
    /// followed by whitespace.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `\r` not followed by `\n`, or bulk data not followed by CRLF.
    #[error("expected CRLF line terminator")]
    MissingCrlf,
    /// A reply frame starting with a byte that is not a RESP2/RESP3 type.
    #[error("unknown reply type '{}'", ByteDisplay(*.0))]
    UnknownReplyType(u8),
    /// A simple reply line longer than [`crate::Limits::max_inline_len`].
    #[error("too big reply line")]
    LineTooLong,
    /// An integer reply (`:`) that is not a decimal `i64`.
    #[error("invalid integer")]
    InvalidInteger,
    /// A double reply (`,`) that is not a number, `inf`, `-inf` or `nan`.
    #[error("invalid double")]
    InvalidDouble,
    /// A boolean reply (`#`) other than `t` or `f`.
    #[error("invalid boolean")]
    InvalidBoolean,
    /// A RESP3 null (`_`) with a non-empty payload.
    #[error("invalid null")]
    InvalidNull,
    /// A verbatim string (`=`) without its `xxx:` format prefix.
    #[error("invalid verbatim string")]
    InvalidVerbatim,
    /// A reply nested deeper than [`crate::MAX_REPLY_DEPTH`] aggregates.
    #[error("reply nesting deeper than {limit}")]
    NestingTooDeep {
        /// Configured limit.
        limit: usize,
    },
}

/// Renders an offending byte readably: printable ASCII as itself, anything
/// else as `\xHH`, so an error text never carries control bytes (or CRLF)
/// back onto the wire.
struct ByteDisplay(u8);

impl fmt::Display for ByteDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "{}", char::from(self.0))
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProtocolError;

    #[test]
    fn display_matches_redis_wording() {
        assert_eq!(
            ProtocolError::ExpectedBulk(b'x').to_string(),
            "expected '$', got 'x'"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(0).to_string(),
            "expected '$', got '\\x00'"
        );
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "invalid multibulk length"
        );
        let too_large = ProtocolError::BulkTooLarge { len: 9, limit: 1 };
        assert_eq!(too_large.to_string(), "invalid bulk length");
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "unbalanced quotes in request"
        );
    }
}
