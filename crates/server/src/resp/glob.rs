//! Redis's glob patterns, what `KEYS` and `SCAN … MATCH` filter keys with: `*` any run of
//! bytes, `?` one byte, `[abc]` one of these, `[^abc]` none of them, `[a-z]` a range, and
//! `\x` the byte `x` itself; anything else is literal. On bytes, not characters.
//!
//! A port of Redis's `stringmatchlen` (`util.c`), edge cases included: an unclosed `[`
//! takes the rest of the pattern as its class, a range written backwards (`[z-a]`) is
//! the same range, and a pattern that needs more than 1,000 nested `*` matches nothing
//! (Redis's guard against patterns built to take forever). Ranges compare bytes unsigned
//! (Redis compares C `char`s, signed on x86, which differs only for bytes ≥ 0x80 in a
//! range).
//!
//! No well-kept crate implements these semantics (the `glob` crates are for paths), so
//! this one is written here and property-tested against a regular-expression oracle.

/// How deep `*` may nest before a match gives up.
const MAX_NESTING: usize = 1000;

/// Whether `text` matches the Redis glob `pattern`. An empty text matches a pattern of
/// stars only (Redis's matcher says no even to `*`, which its commands special-case; keys
/// here are never empty).
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    if text.is_empty() {
        return pattern.iter().all(|&b| b == b'*');
    }
    let mut skip_longer = false;
    match_from(pattern, text, &mut skip_longer, 0)
}

fn match_from(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while let (Some(&pc), Some(&sc)) = (p.first(), s.first()) {
        match pc {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                // Nothing after this star matches anywhere in the rest of the text, so
                // no earlier star can help by taking more: stop the whole search.
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let negated = p.first() == Some(&b'^');
                if negated {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    match p {
                        [b'\\', escaped, ..] => {
                            p = &p[1..];
                            matched |= *escaped == sc;
                        }
                        [b']', ..] => break,
                        [] => {
                            // Unclosed: the class ran to the end of the pattern. Leave
                            // the pattern empty for the step below.
                            break;
                        }
                        [start, b'-', end, ..] => {
                            let (lo, hi) = if start <= end {
                                (*start, *end)
                            } else {
                                (*end, *start)
                            };
                            p = &p[2..];
                            matched |= (lo..=hi).contains(&sc);
                        }
                        [c, ..] => matched |= *c == sc,
                    }
                    p = &p[1..];
                }
                if matched == negated {
                    return false;
                }
                s = &s[1..];
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != sc {
                    return false;
                }
                s = &s[1..];
            }
            literal => {
                if literal != sc {
                    return false;
                }
                s = &s[1..];
            }
        }
        // Past the class's `]` (or nothing, when it was unclosed), the byte or the star.
        p = p.get(1..).unwrap_or_default();
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;
    use proptest::prelude::*;

    #[test]
    fn redis_examples() {
        // From the KEYS documentation.
        for (pattern, yes, no) in [
            (
                "h?llo",
                &["hello", "hallo", "hxllo"][..],
                &["hllo", "heello"][..],
            ),
            ("h*llo", &["hllo", "heeeello"], &["hell"]),
            ("h[ae]llo", &["hello", "hallo"], &["hillo"]),
            ("h[^e]llo", &["hallo", "hbllo"], &["hello"]),
            ("h[a-b]llo", &["hallo", "hbllo"], &["hcllo"]),
            ("h[b-a]llo", &["hallo", "hbllo"], &["hcllo"]),
            ("h\\*llo", &["h*llo"], &["hello"]),
            ("*", &["", "x", "anything"], &[]),
            ("a*", &["a", "abc"], &["", "ba"]),
            ("*a*b", &["ab", "xaxb", "aab"], &["ba", "abx"]),
            ("[abc", &["a", "c"], &["d", "ab"]),
            ("a\\", &["a\\"], &["a"]),
        ] {
            for text in yes {
                assert!(
                    matches(pattern.as_bytes(), text.as_bytes()),
                    "{pattern} ~ {text}"
                );
            }
            for text in no {
                assert!(
                    !matches(pattern.as_bytes(), text.as_bytes()),
                    "{pattern} !~ {text}"
                );
            }
        }
    }

    #[test]
    fn a_pattern_built_to_be_slow_answers_quickly() {
        let pattern = format!("{}b", "a*".repeat(50));
        let text = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!matches(pattern.as_bytes(), text.as_bytes()));
        // Generous: the point is that it ends (without the early stop it takes ages).
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// A byte of the texts tested: the pattern's special bytes included.
    fn text_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"abc-^]*[".to_vec())
    }

    /// One element of a well-formed pattern: (glob, regular expression, a text it
    /// matches).
    fn element() -> impl Strategy<Value = (String, String, Vec<u8>)> {
        prop_oneof![
            prop::sample::select(vec!['a', 'b', 'c', '-', '^', ']']).prop_map(|c| (
                c.to_string(),
                regex::escape(&c.to_string()),
                vec![c as u8]
            )),
            prop::collection::vec(text_byte(), 0..3).prop_map(|run| (
                "*".to_string(),
                "(?s-u:.)*".to_string(),
                run
            )),
            text_byte().prop_map(|b| ("?".to_string(), "(?s-u:.)".to_string(), vec![b])),
            Just(("\\*".to_string(), "\\*".to_string(), b"*".to_vec())),
            Just(("\\[".to_string(), "\\[".to_string(), b"[".to_vec())),
            (
                prop::sample::select(vec![
                    ("a", "a", 'a'),
                    ("ab", "ab", 'b'),
                    ("b-c", "b-c", 'c'),
                    ("c-a", "a-c", 'b'),
                    ("\\]", "\\]", ']')
                ]),
                any::<bool>()
            )
                .prop_map(|((class, body, inside), negated)| {
                    let glob = format!("[{}{class}]", if negated { "^" } else { "" });
                    let regex = if negated {
                        format!("(?s-u:[^{body}])")
                    } else {
                        format!("(?-u:[{body}])")
                    };
                    // A byte in the class, or for a negated one a byte outside it.
                    let sample = if negated { b'-' } else { inside as u8 };
                    (glob, regex, vec![sample])
                }),
        ]
    }

    proptest! {
        /// Every well-formed pattern matches exactly what its regular expression does, on
        /// texts built to match it and on those texts with one byte changed.
        #[test]
        fn agrees_with_a_regular_expression(
            parts in prop::collection::vec(element(), 0..8),
            change in prop::option::of((any::<prop::sample::Index>(), text_byte())),
        ) {
            let glob: String = parts.iter().map(|(g, _, _)| g.as_str()).collect();
            let regex: String = parts.iter().map(|(_, r, _)| r.as_str()).collect();
            let mut text: Vec<u8> = parts.iter().flat_map(|(_, _, t)| t.clone()).collect();
            if let (Some((at, byte)), false) = (change, text.is_empty()) {
                let at = at.index(text.len());
                text[at] = byte;
            }
            let regex = regex::bytes::Regex::new(&format!("^(?:{regex})$"))
                .unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(matches(glob.as_bytes(), &text), regex.is_match(&text), "{} on {:?}", glob, String::from_utf8_lossy(&text));
        }

        /// Any bytes as a pattern: an answer, never a panic.
        #[test]
        fn never_panics(pattern in prop::collection::vec(any::<u8>(), 0..24), text in prop::collection::vec(any::<u8>(), 0..24)) {
            let _ = matches(&pattern, &text);
        }
    }
}
