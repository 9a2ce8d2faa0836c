//! The tokens of the mapping language, shared by filters, key terms and ops.

/// One token. Identifiers include dots (`user.id` is a path).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    /// A number literal, with its text (integers stay exact).
    Num(String),
    Eq,
    Ne,
    And,
    LParen,
    RParen,
    Comma,
}

/// Splits `src` into tokens, or says where it could not.
pub(crate) fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Eq);
                i += 2;
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Ne);
                i += 2;
            }
            b'&' if bytes.get(i + 1) == Some(&b'&') => {
                out.push(Tok::And);
                i += 2;
            }
            b'"' | b'\'' => {
                let (s, next) = string(src, i)?;
                out.push(Tok::Str(s));
                i = next;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_digit() || matches!(bytes[i], b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let text = &src[start..i];
                if text.parse::<f64>().is_err() {
                    return Err(format!("'{text}' is not a number"));
                }
                out.push(Tok::Num(text.to_string()));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.' | b'-'))
                {
                    i += 1;
                }
                let word = &src[start..i];
                if word.split('.').any(str::is_empty) {
                    return Err(format!("'{word}' is not a field path (empty segment)"));
                }
                out.push(if word == "and" {
                    Tok::And
                } else {
                    Tok::Ident(word.to_string())
                });
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected '{ch}' at byte {i}"));
            }
        }
    }
    Ok(out)
}

/// A quoted string starting at `start`, with `\"`, `\'` and `\\` escapes; returns it and
/// the index after the closing quote.
fn string(src: &str, start: usize) -> Result<(String, usize), String> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\'' | '\\'))) => out.push(e),
                _ => return Err("only \\\", \\' and \\\\ escapes are allowed in strings".into()),
            },
            c if c == quote => return Ok((out, start + 1 + offset + 1)),
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_a_filter() {
        assert_eq!(
            tokens(r#"type == "page\"view" and n != -2.5 && has(a.b)"#).unwrap(),
            vec![
                Tok::Ident("type".into()),
                Tok::Eq,
                Tok::Str("page\"view".into()),
                Tok::And,
                Tok::Ident("n".into()),
                Tok::Ne,
                Tok::Num("-2.5".into()),
                Tok::And,
                Tok::Ident("has".into()),
                Tok::LParen,
                Tok::Ident("a.b".into()),
                Tok::RParen,
            ]
        );
        assert!(tokens("a = b").is_err());
        assert!(tokens("\"open").is_err());
        assert!(tokens("a..b").is_err());
    }
}
