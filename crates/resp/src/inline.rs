//! Inline commands: a single text line such as `SET key "hello world"\r\n`,
//! as typed by humans over `telnet`/`nc`.
//!
//! Lines are split like Redis' `sdssplitargs`: arguments are separated by
//! whitespace; double-quoted arguments understand `\xHH`, `\n`, `\r`, `\t`,
//! `\b`, `\a` and `\<char>` escapes; single-quoted arguments only `\'`; a
//! closing quote must be followed by whitespace or the end of the line; a
//! quote may start mid-argument (`foo"bar"` is `foobar`). The line ends at
//! the first `\n`, with an optional preceding `\r` stripped.

use bytes::{Bytes, BytesMut};

use crate::request::{Parsed, Request};
use crate::{Limits, ProtocolError};

/// Parses one inline line from the front of `buf`.
///
/// The search for `\n` is bounded by `limits.max_inline_len`, so an
/// unterminated line costs at most that much per call and is rejected once
/// it exceeds the limit, whether or not its end has arrived yet.
pub(crate) fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let window = buf
        .get(..limits.max_inline_len.saturating_add(1))
        .unwrap_or(&buf[..]);
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() > limits.max_inline_len {
            Err(ProtocolError::InlineTooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = buf.split_to(newline + 1).freeze();
    let content_len = match line.get(..newline) {
        Some([.., b'\r']) => newline - 1,
        _ => newline,
    };
    let args = split_args(&line.slice(..content_len))?;
    if args.len() > limits.max_args {
        // The same bound as a multibulk request's (found by the `resp_request` fuzz
        // target: an inline line of 65 arguments passed a limit of 64).
        return Err(ProtocolError::TooManyArgs {
            count: args.len() as u64,
            limit: limits.max_args,
        });
    }
    if args.is_empty() {
        Ok(Parsed::Skipped)
    } else {
        Ok(Parsed::Request(Request { args }))
    }
}

/// Whitespace as C's `isspace` in the "C" locale, which `sdssplitargs` uses.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits an inline line into arguments.
///
/// Unquoted arguments are zero-copy slices of `line`; an argument containing
/// a quoted section is unescaped into its own allocation.
pub(crate) fn split_args(line: &Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let bytes: &[u8] = line;
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while bytes.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(args);
        }
        let start = i;
        // Becomes Some once the argument contains a quoted section.
        let mut owned: Option<Vec<u8>> = None;
        loop {
            match bytes.get(i) {
                None => break,
                Some(&b) if is_space(b) => break,
                Some(&quote @ (b'"' | b'\'')) => {
                    let out = owned
                        .get_or_insert_with(|| bytes.get(start..i).unwrap_or_default().to_vec());
                    i = if quote == b'"' {
                        double_quoted(bytes, i + 1, out)?
                    } else {
                        single_quoted(bytes, i + 1, out)?
                    };
                }
                Some(&b) => {
                    if let Some(out) = owned.as_mut() {
                        out.push(b);
                    }
                    i += 1;
                }
            }
        }
        args.push(match owned {
            Some(out) => Bytes::from(out),
            None => line.slice(start..i),
        });
    }
}

/// Value of an ASCII hex digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// After a closing quote at `i`, checks that the argument ends there and
/// returns the position past the quote.
fn close_quote(bytes: &[u8], i: usize) -> Result<usize, ProtocolError> {
    match bytes.get(i + 1) {
        Some(&b) if !is_space(b) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(i + 1),
    }
}

/// Unescapes a double-quoted section starting just after its opening quote.
fn double_quoted(bytes: &[u8], mut i: usize, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match bytes.get(i) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'"') => return close_quote(bytes, i),
            Some(b'\\') => {
                let hex = match (bytes.get(i + 1), bytes.get(i + 2), bytes.get(i + 3)) {
                    (Some(b'x'), Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)),
                    _ => None,
                };
                if let Some((hi, lo)) = hex {
                    out.push(hi << 4 | lo);
                    i += 4;
                } else if let Some(&c) = bytes.get(i + 1) {
                    out.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                } else {
                    // A trailing backslash: the quote is unterminated.
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Copies a single-quoted section starting just after its opening quote.
fn single_quoted(bytes: &[u8], mut i: usize, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match bytes.get(i) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') if bytes.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            Some(b'\'') => return close_quote(bytes, i),
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let line = Bytes::copy_from_slice(line.as_bytes());
        split_args(&line).map(|args| args.iter().map(|a| a.to_vec()).collect())
    }

    fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|a| a.to_vec()).collect()
    }

    #[test]
    fn an_inline_request_is_held_to_the_argument_limit_as_a_multibulk_one_is() {
        let limits = Limits {
            max_args: 2,
            ..Limits::DEFAULT
        };
        let mut two = BytesMut::from(&b"GET a\r\n"[..]);
        assert!(matches!(
            parse_inline(&mut two, &limits),
            Ok(Parsed::Request(_))
        ));
        let mut three = BytesMut::from(&b"SET a b\r\n"[..]);
        assert!(matches!(
            parse_inline(&mut three, &limits),
            Err(ProtocolError::TooManyArgs { count: 3, limit: 2 })
        ));
    }

    #[test]
    fn plain_whitespace() {
        assert_eq!(split("SET a b").unwrap(), v(&[b"SET", b"a", b"b"]));
        assert_eq!(split("  PING \t ").unwrap(), v(&[b"PING"]));
        assert_eq!(split("").unwrap(), v(&[]));
        assert_eq!(split(" \t\r ").unwrap(), v(&[]));
        assert_eq!(split("a\\b").unwrap(), v(&[b"a\\b"]));
    }

    #[test]
    fn double_quotes() {
        assert_eq!(
            split(r#"SET "hello world" "a\"b""#).unwrap(),
            v(&[b"SET", b"hello world", b"a\"b"])
        );
        assert_eq!(
            split(r#""\x00\xfF\n\r\t\b\a\z\\""#).unwrap(),
            v(&[b"\x00\xff\n\r\t\x08\x07z\\"])
        );
        assert_eq!(split(r#""\x4""#).unwrap(), v(&[b"x4"]));
        assert_eq!(split(r#""""#).unwrap(), v(&[b""]));
        assert_eq!(split(r#"foo"bar baz""#).unwrap(), v(&[b"foobar baz"]));
    }

    #[test]
    fn single_quotes() {
        assert_eq!(
            split(r#"'it\'s' '\n' ''"#).unwrap(),
            v(&[b"it's", b"\\n", b""])
        );
    }

    #[test]
    fn unbalanced() {
        for bad in [
            r#""abc"#,
            r#"'abc"#,
            r#""abc"def"#,
            r#"'abc'def"#,
            r#""abc\"#,
            r#"a "b"#,
        ] {
            assert_eq!(split(bad), Err(ProtocolError::UnbalancedQuotes), "{bad}");
        }
    }

    #[test]
    fn unquoted_args_are_zero_copy() {
        let line = Bytes::from_static(b"GET key");
        let args = split_args(&line).unwrap();
        assert_eq!(args[1].as_ptr(), line[4..].as_ptr());
    }
}
