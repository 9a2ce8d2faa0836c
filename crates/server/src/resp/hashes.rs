//! Hash commands over fields: HSET, HMSET, HGETALL, HMGET, HDEL, HLEN, HKEYS, HVALS,
//! HEXISTS; HSETNX is refused. (HGET joins the single-key reads, HINCRBY the writes.)
//!
//! A hash is one partition and its fields are clustering keys: `HSET h f v` writes the
//! register at (h, f), `HINCRBY h f 1` the counter there, so a field takes the type of
//! its first write as a key does. A declared view's hash is one partition of the view
//! (`HINCRBY pageviews:/about 2024-11-24T13 1`). HSET's count of new fields is read
//! before the write, so two clients adding one field at once may both count it.

use bytes::Bytes;
use speedlayer_api::RangeQuery;
use speedlayer_resp::Reply;

use super::args::{request_error, wrongtype};
use super::lookup::{apply, check, read, set_update, string_of, target};
use super::session::Session;

/// Most fields a hash command reads.
const MAX_HASH_FIELDS: usize = 100_000;

/// True for the commands this module executes.
pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "HSET"
            | "HMSET"
            | "HGETALL"
            | "HMGET"
            | "HDEL"
            | "HLEN"
            | "HKEYS"
            | "HVALS"
            | "HEXISTS"
            | "HSETNX"
    )
}

/// The fields of hash `key` with their values, in field order.
async fn fields(session: &Session, key: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Reply> {
    let t = target(session, key, Some(&Bytes::new()))?;
    let rows = session
        .shared
        .coordinator
        .range(
            RangeQuery {
                view: t.view.name.clone(),
                partition: t.key.partition.clone(),
                from: None,
                to: None,
                limit: MAX_HASH_FIELDS,
            },
            session.options().consistency,
        )
        .await
        .map_err(|e| request_error(&e))?;
    let mut pairs = Vec::new();
    for row in rows.rows {
        if row.clustering.is_empty() {
            continue; // the plain key of the same name, not a field
        }
        match string_of(&row.value) {
            Ok(Some(value)) => pairs.push((Bytes::from(row.clustering), value)),
            Ok(None) => {}
            Err(()) => return Err(wrongtype()),
        }
    }
    Ok(pairs)
}

/// Runs one of [`handles`]'s commands.
pub async fn run(session: &Session, name: &str, args: &[Bytes]) -> Result<Reply, Reply> {
    let coordinator = &session.shared.coordinator;
    match name {
        "HSETNX" => Err(Reply::error(
            "ERR HSETNX is not supported: a conditional write cannot be atomic across leaderless replicas",
        )),
        "HGETALL" | "HLEN" | "HKEYS" | "HVALS" => {
            check(args.len() == 2, name)?;
            let pairs = fields(session, &args[1]).await?;
            Ok(match name {
                "HGETALL" => Reply::Map(
                    pairs
                        .into_iter()
                        .map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v)))
                        .collect(),
                ),
                "HLEN" => Reply::Integer(pairs.len() as i64),
                "HKEYS" => Reply::Array(pairs.into_iter().map(|(f, _)| Reply::Bulk(f)).collect()),
                _ => Reply::Array(pairs.into_iter().map(|(_, v)| Reply::Bulk(v)).collect()),
            })
        }
        "HMGET" | "HEXISTS" => {
            check(
                if name == "HEXISTS" {
                    args.len() == 3
                } else {
                    args.len() >= 3
                },
                name,
            )?;
            let mut values = Vec::with_capacity(args.len() - 2);
            for field in &args[2..] {
                let t = target(session, &args[1], Some(field))?;
                values.push(match read(session, &t).await?.as_ref().map(string_of) {
                    Some(Ok(Some(value))) => Some(value),
                    Some(Err(())) => return Err(wrongtype()),
                    _ => None,
                });
            }
            Ok(if name == "HEXISTS" {
                Reply::Integer(i64::from(values[0].is_some()))
            } else {
                Reply::Array(
                    values
                        .into_iter()
                        .map(|v| v.map_or(Reply::Null, Reply::Bulk))
                        .collect(),
                )
            })
        }
        "HDEL" => {
            check(args.len() >= 3, name)?;
            let mut keys = Vec::with_capacity(args.len() - 2);
            let mut view = None;
            for field in &args[2..] {
                let t = target(session, &args[1], Some(field))?;
                keys.push(t.key);
                view = Some(t.view);
            }
            let Some(view) = view else {
                return Err(Reply::error("ERR no field"));
            };
            let existed = coordinator
                .delete(&view.name, keys, session.options())
                .await
                .map_err(|e| request_error(&e))?;
            Ok(Reply::Integer(existed.iter().filter(|e| **e).count() as i64))
        }
        _ => {
            // HSET, HMSET: field value pairs.
            check(args.len() >= 4 && args.len().is_multiple_of(2), name)?;
            let mut updates = Vec::with_capacity(args.len() / 2 - 1);
            let mut new_fields = 0;
            let mut view = None;
            for pair in args[2..].chunks(2) {
                let t = target(session, &args[1], Some(&pair[0]))?;
                if name == "HSET" && read(session, &t).await?.is_none() {
                    new_fields += 1;
                }
                let (target_view, update) = set_update(t, &pair[1])?;
                updates.push(update);
                view = Some(target_view);
            }
            let Some(view) = view else {
                return Err(Reply::error("ERR no field"));
            };
            apply(session, &view.name, updates).await?;
            Ok(if name == "HMSET" {
                Reply::ok()
            } else {
                Reply::Integer(new_fields)
            })
        }
    }
}
