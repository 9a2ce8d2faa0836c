//! Hard limits that bound the memory and CPU a single peer can make the codec
//! spend before it is declared to be speaking garbage.

/// Hard limits applied while parsing; a frame past any of them is a protocol
/// error (the server answers `-ERR Protocol error: ...` and closes).
///
/// Limits are checked as soon as the offending header is seen, i.e. before
/// the body arrives, so a peer announcing a 10 GiB bulk is rejected without
/// buffering it. The same struct bounds [`crate::parse_reply`]: `max_bulk_len`
/// caps blob replies, `max_args` caps aggregate lengths, and `max_inline_len`
/// caps simple line replies (`+`, `-`, `:`, `,` ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted bulk string, in bytes (Redis' `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest accepted number of arguments in one request (multibulk or inline), and of
    /// elements in one reply aggregate.
    pub max_args: usize,
    /// Longest accepted inline command line (and simple reply line), in bytes,
    /// excluding the final `\n`. Bounds how much an unterminated line can make
    /// the parser re-scan on every call.
    pub max_inline_len: usize,
}

impl Limits {
    /// The defaults, matching Redis: 512 MiB bulks, 1 Mi arguments, 64 KiB
    /// inline lines. Usable in `const` contexts.
    pub const DEFAULT: Limits = Limits {
        max_bulk_len: 512 * 1024 * 1024,
        max_args: 1024 * 1024,
        max_inline_len: 64 * 1024,
    };
}

impl Default for Limits {
    /// Same as [`Limits::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Deepest aggregate nesting [`crate::parse_reply`] accepts.
///
/// Decoding and dropping a [`crate::Reply`] are recursive, so without a bound
/// a peer could overflow the stack with `*1\r\n*1\r\n...`. Real replies nest a
/// handful of levels at most.
pub const MAX_REPLY_DEPTH: usize = 128;

/// Longest accepted text of a length header (`*<n>` / `$<n>` and friends),
/// excluding the type byte and CRLF. `-9223372036854775808` is 20 bytes, so
/// no valid length is longer; bounding it keeps an unterminated header from
/// being re-scanned indefinitely.
pub(crate) const MAX_LENGTH_LINE: usize = 20;
