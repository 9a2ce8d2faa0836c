//! `SCAN` and `KEYS`: the keys of the implicit `redis` view, listed across the ring by the
//! coordinator ([`speedlayer_api::Coordinator::scan_keys`]).
//!
//! The cursor is a placement hash in decimal (what redis-py and redis-cli parse as a
//! number); `0` starts and ends an iteration. Every key that exists for the whole
//! iteration is returned exactly once (keys with equal placement hashes, a hash's
//! fields above all, come in one reply); keys written or deleted meanwhile may or may
//! not be. As in Redis, `MATCH` and `TYPE` filter a page after it is read, so a reply
//! may hold fewer keys than `COUNT`, or none, with a cursor that is not `0`.
//!
//! Keys of declared views (`view:partition:clustering`) are not listed: they are rows of
//! views, read by their names; `GET /v1/views/{view}/epochs` counts them.

use bytes::Bytes;
use speedlayer_core::{Key, ValueType};
use speedlayer_resp::Reply;

use super::args::{command_name, integer, request_error};
use super::glob;
use super::keys::REDIS_VIEW;
use super::lookup::check;
use super::session::Session;

/// `SCAN`'s `COUNT` when none is given (Redis's).
const DEFAULT_COUNT: usize = 10;
/// Keys asked per page while `KEYS` walks the whole keyspace.
const KEYS_PAGE: usize = 1000;

/// True for the commands this module executes.
pub fn handles(name: &str) -> bool {
    matches!(name, "SCAN" | "KEYS")
}

/// Runs one of [`handles`]'s commands.
pub async fn run(session: &Session, name: &str, args: &[Bytes]) -> Result<Reply, Reply> {
    match name {
        "KEYS" => {
            check(args.len() == 2, name)?;
            let filter = Filter {
                pattern: Some(args[1].clone()),
                kind: None,
            };
            let mut cursor = 0;
            let mut keys = Vec::new();
            loop {
                let (next, page) = page(session, cursor, KEYS_PAGE, &filter).await?;
                keys.extend(page);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            Ok(Reply::Array(keys.into_iter().map(Reply::Bulk).collect()))
        }
        _ => {
            check(args.len() >= 2, name)?;
            let cursor = std::str::from_utf8(&args[1])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Reply::error("ERR invalid cursor"))?;
            let mut count = DEFAULT_COUNT;
            let mut filter = Filter::default();
            let mut options = args[2..].chunks(2);
            for option in options.by_ref() {
                let [flag, value] = option else {
                    return Err(Reply::error("ERR syntax error"));
                };
                match command_name(flag).as_str() {
                    "MATCH" => filter.pattern = Some(value.clone()),
                    "COUNT" => {
                        count = usize::try_from(integer(value)?)
                            .ok()
                            .filter(|&n| n >= 1)
                            .ok_or_else(|| Reply::error("ERR syntax error"))?;
                    }
                    "TYPE" => filter.kind = Some(String::from_utf8_lossy(value).to_lowercase()),
                    _ => return Err(Reply::error("ERR syntax error")),
                }
            }
            let (next, keys) = page(session, cursor, count, &filter).await?;
            Ok(Reply::Array(vec![
                Reply::Bulk(Bytes::from(next.to_string())),
                Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
            ]))
        }
    }
}

/// What a page's keys are filtered by.
#[derive(Default)]
struct Filter {
    /// `MATCH`: a Redis glob.
    pattern: Option<Bytes>,
    /// `TYPE`: Redis's type name.
    kind: Option<String>,
}

/// One page from `cursor`: the next cursor and the Redis keys in it that pass `filter`.
async fn page(
    session: &Session,
    cursor: u64,
    count: usize,
    filter: &Filter,
) -> Result<(u64, Vec<Bytes>), Reply> {
    let listing = session
        .shared
        .coordinator
        .scan_keys(REDIS_VIEW, cursor, count)
        .await
        .map_err(|e| request_error(&e))?;
    let keys = redis_keys(listing.keys)
        .into_iter()
        .filter(|(key, kind)| {
            filter
                .pattern
                .as_ref()
                .is_none_or(|pattern| glob::matches(pattern, key))
                && filter.kind.as_deref().is_none_or(|k| k == *kind)
        })
        .map(|(key, _)| Bytes::from(key))
        .collect();
    Ok((listing.cursor, keys))
}

/// The Redis keys of listed rows, each with Redis's type name: a row with no clustering
/// key is the key itself; rows with one are the fields of the hash named by their
/// partition. Rows of one partition come together (they share a placement hash).
fn redis_keys(rows: Vec<(Key, ValueType)>) -> Vec<(Vec<u8>, &'static str)> {
    let mut out: Vec<(Vec<u8>, &'static str)> = Vec::new();
    for (key, value_type) in rows {
        let kind = if key.clustering.is_empty() {
            match value_type {
                ValueType::Set => "set",
                _ => "string",
            }
        } else {
            "hash"
        };
        match out.last_mut() {
            Some((last, last_kind)) if *last == key.partition => {
                // A plain key and fields under one name: the plain key's type wins, as
                // TYPE answers.
                if kind != "hash" {
                    *last_kind = kind;
                }
            }
            _ => out.push((key.partition, kind)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(partition: &str, clustering: &str, value_type: ValueType) -> (Key, ValueType) {
        (
            Key::new(partition.into(), clustering.into()).unwrap_or_else(|e| panic!("{e}")),
            value_type,
        )
    }

    #[test]
    fn a_hash_is_one_key_and_types_follow_redis() {
        let keys = redis_keys(vec![
            row("n", "", ValueType::Counter),
            row("h", "f1", ValueType::Register),
            row("h", "f2", ValueType::Counter),
            row("s", "", ValueType::Set),
            row("u", "", ValueType::Hll),
        ]);
        assert_eq!(
            keys,
            vec![
                (b"n".to_vec(), "string"),
                (b"h".to_vec(), "hash"),
                (b"s".to_vec(), "set"),
                (b"u".to_vec(), "string"),
            ]
        );
    }
}
