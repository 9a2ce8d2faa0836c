//! Comparing secrets (client passwords, the cluster secret) without leaking, through
//! timing, where a guess differs: the one comparison every door uses.

/// Whether `given` is `expected`; the time depends only on `expected`'s length.
pub fn secret_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_matches(b"s3cret", b"s3cret"));
        assert!(!secret_matches(b"s3cre", b"s3cret"));
        assert!(!secret_matches(b"s3cret!", b"s3cret"));
        assert!(!secret_matches(b"", b"s3cret"));
        assert!(secret_matches(b"", b""));
    }
}
