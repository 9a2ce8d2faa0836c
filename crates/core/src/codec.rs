//! Byte-level helpers shared by every encoding in this crate: LEB128 varints,
//! zigzag varints, length-prefixed byte strings, and a bounds-checked [`Reader`].
//!
//! Why one module: every value type must encode *canonically* (equal states give
//! equal bytes, so replicas' Merkle hashes agree) and must decode arbitrary bytes
//! without panicking. Centralising the primitives means both guarantees are made
//! once: the writers here only ever emit the minimal encoding, and the reader
//! refuses anything else (overlong varints, lengths past the end of input).

/// Why a byte string could not be decoded.
///
/// Decoding is total: any input yields either a value or one of these, never a
/// panic, so bytes from disk or the network can be fed to it unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("encoded value is truncated")]
    Truncated,
    /// The first byte does not name a known value type.
    #[error("unknown value type tag {0}")]
    UnknownTag(u8),
    /// A complete value was read but bytes remain; a canonical encoding has none.
    #[error("trailing bytes after a complete encoded value")]
    TrailingBytes,
    /// The bytes are well formed but describe a non-canonical or impossible state.
    #[error("invalid encoding: {0}")]
    Invalid(&'static str),
}

/// Appends `v` as an unsigned LEB128 varint (1–10 bytes, minimal length).
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation to the low 7 bits is the point of the encoding.
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Maps a signed integer to an unsigned one so small magnitudes stay small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`]; a bijection on the full 64-bit range.
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` zigzag-encoded as a varint.
pub fn write_zigzag(out: &mut Vec<u8>, v: i64) {
    write_varint(out, zigzag(v));
}

/// Appends a varint length followed by the bytes themselves.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a UTF-8 string as length-prefixed bytes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_bytes(out, s.as_bytes());
}

/// A cursor over an input buffer whose every read is bounds-checked.
///
/// Invariant: `pos <= buf.len()`. Reads never allocate more than the input
/// length, so a hostile length prefix cannot cause a huge allocation.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Number of bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Succeeds only if the whole input was consumed: canonical encodings carry
    /// no trailing garbage.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads a minimal unsigned LEB128 varint; overlong or >64-bit encodings are
    /// refused so that each number has exactly one accepted encoding.
    pub fn read_varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.read_u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::Invalid("varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::Invalid("overlong varint"));
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint overflows 64 bits"))
    }

    /// Reads a zigzag varint.
    pub fn read_zigzag(&mut self) -> Result<i64, DecodeError> {
        self.read_varint().map(unzigzag)
    }

    /// Reads a varint that counts items or bytes still to come, as a `usize`.
    ///
    /// Every item of every encoding in this crate takes at least one byte, so a
    /// count larger than the remaining input is refused up front.
    pub fn read_len(&mut self) -> Result<usize, DecodeError> {
        let n = self.read_varint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// Reads length-prefixed bytes.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.read_len()?;
        self.read_exact(n)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn read_str(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.read_bytes()?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.read_varint(), Ok(v));
            assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn zigzag_round_trips_edges() {
        for v in [0, 1, -1, i64::MIN, i64::MAX, 63, -64] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn overlong_and_overflowing_varints_are_refused() {
        assert!(Reader::new(&[0x80, 0x00]).read_varint().is_err());
        let too_big = [0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>();
        assert!(Reader::new(&too_big).read_varint().is_err());
        assert!(Reader::new(&[0xff; 11]).read_varint().is_err());
        assert_eq!(
            Reader::new(&[0x80]).read_varint(),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        let mut out = Vec::new();
        write_varint(&mut out, u64::MAX);
        assert_eq!(Reader::new(&out).read_bytes(), Err(DecodeError::Truncated));
    }
}
