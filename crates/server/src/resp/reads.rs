//! Commands that read data (and the few writes that must read first).

use std::sync::Arc;

use bytes::Bytes;
use speedlayer_api::{Update, View};
use speedlayer_core::{Cardinality, Hll, Key, Op, Reading, Value, ValueType};
use speedlayer_resp::{Reply, Request};

use super::args::{request_error, wrongtype};
use super::keys::REDIS_VIEW;
use super::lookup::{apply, check, read, read_members, set_update, string_of, target};
use super::session::Session;
use super::step::Step;
use super::{hashes, scan, set_algebra};

/// True for the commands this module executes.
pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "GET"
            | "MGET"
            | "EXISTS"
            | "DEL"
            | "UNLINK"
            | "TYPE"
            | "MSET"
            | "SMISMEMBER"
            | "HGET"
            | "SMEMBERS"
            | "SISMEMBER"
            | "SCARD"
            | "PFCOUNT"
            | "PFMERGE"
            | "PFADD"
            | "FLUSHDB"
            | "FLUSHALL"
    ) || set_algebra::handles(name)
        || hashes::handles(name)
        || scan::handles(name)
}

/// The plan of a single-key read that can join a group (GET, HGET), or `None`.
pub fn plan(session: &Session, name: &str, request: &Request) -> Option<Step> {
    let args = &request.args;
    let planned = match name {
        "GET" if args.len() == 2 => target(session, &args[1], None),
        "HGET" if args.len() == 3 => target(session, &args[1], Some(&args[2])),
        _ => return None,
    };
    Some(match planned {
        Ok(target) => Step::Get(target),
        Err(reply) => Step::Reply(reply),
    })
}

/// Executes a data command.
pub async fn execute(session: &Session, name: &str, request: Request) -> Reply {
    match run(session, name, &request.args).await {
        Ok(reply) | Err(reply) => reply,
    }
}

/// A string command's reply to a reading (nil when absent, WRONGTYPE for sets and HLLs).
pub fn string_reply(reading: Option<Reading>) -> Reply {
    match reading.as_ref().map(string_of) {
        None | Some(Ok(None)) => Reply::Null,
        Some(Ok(Some(bytes))) => Reply::Bulk(bytes),
        Some(Err(())) => wrongtype(),
    }
}

/// The HLL sketch of a reading: `None` when absent, WRONGTYPE for another type. A key
/// with an exact distinct count from a batch view gives its sketch part only (an exact
/// count cannot be merged into a sketch): PFMERGE of such a key merges its realtime part.
fn hll_of(reading: Option<Reading>) -> Result<Option<Hll>, Reply> {
    match reading {
        None => Ok(None),
        Some(Reading::State(Value::Hll(h))) => Ok(Some(h)),
        Some(Reading::Distinct { sketch, .. }) => Ok(Some(sketch)),
        Some(_) => Err(wrongtype()),
    }
}

async fn run(session: &Session, name: &str, args: &[Bytes]) -> Result<Reply, Reply> {
    let coordinator = &session.shared.coordinator;
    match name {
        "GET" => {
            check(args.len() == 2, name)?;
            let t = target(session, &args[1], None)?;
            Ok(string_reply(read(session, &t).await?))
        }
        "HGET" => {
            check(args.len() == 3, name)?;
            let t = target(session, &args[1], Some(&args[2]))?;
            Ok(string_reply(read(session, &t).await?))
        }
        "MGET" => {
            check(args.len() >= 2, name)?;
            let mut values = Vec::with_capacity(args.len() - 1);
            for key in &args[1..] {
                let reading = match target(session, key, None) {
                    Ok(t) => read(session, &t).await.ok().flatten(),
                    Err(_) => None,
                };
                values.push(match reading.as_ref().map(string_of) {
                    Some(Ok(Some(bytes))) => Reply::Bulk(bytes),
                    _ => Reply::Null,
                });
            }
            Ok(Reply::Array(values))
        }
        "EXISTS" => {
            check(args.len() >= 2, name)?;
            let mut n = 0;
            for key in &args[1..] {
                let t = target(session, key, None)?;
                if read(session, &t).await?.is_some() {
                    n += 1;
                }
            }
            Ok(Reply::Integer(n))
        }
        "FLUSHDB" | "FLUSHALL" => {
            // ASYNC and SYNC both answer once the flush is durable here and sent to
            // every node that is up: it is O(1) either way.
            let mode = args
                .get(1)
                .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
            match mode.as_deref() {
                None | Some("ASYNC") | Some("SYNC") if args.len() <= 2 => {}
                _ => return Err(Reply::error("ERR syntax error")),
            }
            coordinator
                .flush_view(REDIS_VIEW)
                .await
                .map_err(|e| request_error(&e))?;
            Ok(Reply::ok())
        }
        "TYPE" => {
            check(args.len() == 2, name)?;
            let t = target(session, &args[1], None)?;
            // Redis's names: counters, registers, extrema and HLLs are strings there.
            Ok(Reply::Simple(
                match read(session, &t).await? {
                    None => "none",
                    Some(Reading::State(Value::Set(_))) => "set",
                    Some(_) => "string",
                }
                .into(),
            ))
        }
        "MSET" => {
            check(args.len() >= 3 && args.len() % 2 == 1, name)?;
            // Pairs are checked before any is written (a declared view's type); in the
            // implicit view a key's type is known only where it is applied, so a pair
            // of another type answers WRONGTYPE while the others are written.
            let mut by_view: Vec<(Arc<View>, Vec<Update>)> = Vec::new();
            for pair in args[1..].chunks(2) {
                let (view, update) = set_update(target(session, &pair[0], None)?, &pair[1])?;
                match by_view.iter_mut().find(|(v, _)| Arc::ptr_eq(v, &view)) {
                    Some((_, updates)) => updates.push(update),
                    None => by_view.push((view, vec![update])),
                }
            }
            for (view, updates) in by_view {
                apply(session, &view.name, updates).await?;
            }
            Ok(Reply::ok())
        }
        "DEL" | "UNLINK" => {
            check(args.len() >= 2, name)?;
            let mut by_view: Vec<(Arc<View>, Vec<Key>)> = Vec::new();
            for key in &args[1..] {
                let t = target(session, key, None)?;
                match by_view.iter_mut().find(|(v, _)| Arc::ptr_eq(v, &t.view)) {
                    Some((_, keys)) => keys.push(t.key),
                    None => by_view.push((t.view, vec![t.key])),
                }
            }
            let mut deleted = 0;
            for (view, keys) in by_view {
                let existed = coordinator
                    .delete(&view.name, keys, session.options())
                    .await
                    .map_err(|e| request_error(&e))?;
                deleted += existed.iter().filter(|e| **e).count() as i64;
            }
            Ok(Reply::Integer(deleted))
        }
        "SCARD" => {
            check(args.len() == 2, name)?;
            let t = target(session, &args[1], None)?;
            // Owners answer counts with state digests; members are read only when they
            // disagree.
            let counts = session
                .shared
                .coordinator
                .set_cardinality(&t.view.name, vec![t.key], session.options().consistency)
                .await
                .map_err(|e| request_error(&e))?;
            match counts.first() {
                Some(Cardinality::Members(n)) => {
                    Ok(Reply::Integer(i64::try_from(*n).unwrap_or(i64::MAX)))
                }
                Some(Cardinality::WrongType) => Err(wrongtype()),
                None => Ok(Reply::Integer(0)),
            }
        }
        "SMEMBERS" | "SISMEMBER" | "SMISMEMBER" => {
            check(
                match name {
                    "SISMEMBER" => args.len() == 3,
                    "SMISMEMBER" => args.len() >= 3,
                    _ => args.len() == 2,
                },
                name,
            )?;
            let t = target(session, &args[1], None)?;
            let reading = match name {
                // A membership test reads those members only, not the whole set.
                "SISMEMBER" | "SMISMEMBER" => {
                    let members = args[2..].iter().map(|m| m.to_vec()).collect();
                    read_members(session, &t, members).await?
                }
                _ => read(session, &t).await?,
            };
            let set = match reading {
                None => None,
                Some(Reading::State(Value::Set(set))) => Some(set),
                Some(_) => return Err(wrongtype()),
            };
            Ok(match name {
                "SMEMBERS" => Reply::Set(
                    set.iter()
                        .flat_map(|s| s.members())
                        .map(|m| Reply::Bulk(Bytes::copy_from_slice(m)))
                        .collect(),
                ),
                "SISMEMBER" => Reply::Integer(i64::from(set.is_some_and(|s| s.contains(&args[2])))),
                // SMISMEMBER
                _ => Reply::Array(
                    args[2..]
                        .iter()
                        .map(|m| {
                            Reply::Integer(i64::from(set.as_ref().is_some_and(|s| s.contains(m))))
                        })
                        .collect(),
                ),
            })
        }
        "PFCOUNT" => {
            check(args.len() >= 2, name)?;
            // Readings, not sketches: a key with an exact count from a batch view counts
            // it (see `Reading::Distinct`).
            let mut union: Option<Reading> = None;
            for key in &args[1..] {
                let t = target(session, key, None)?;
                let Some(reading) = read(session, &t).await? else {
                    continue;
                };
                if reading.value_type() != ValueType::Hll {
                    return Err(wrongtype());
                }
                match &mut union {
                    Some(u) => u.combine(&reading).map_err(|_| wrongtype())?,
                    None => union = Some(reading),
                }
            }
            let count = union.map_or(0, |u| u.to_json().as_i64().unwrap_or(i64::MAX));
            Ok(Reply::Integer(count))
        }
        "PFMERGE" | "PFADD" => {
            check(args.len() >= 2, name)?;
            let dest = target(session, &args[1], None)?;
            let existing = hll_of(read(session, &dest).await?)?;
            let mut union = Value::new(ValueType::Hll);
            let sources = if name == "PFMERGE" {
                &args[2..]
            } else {
                &[][..]
            };
            for key in sources {
                let t = target(session, key, None)?;
                if let Some(h) = hll_of(read(session, &t).await?)? {
                    union.merge(&Value::Hll(h)).map_err(|_| wrongtype())?;
                }
            }
            if name == "PFADD" && existing.is_some() {
                return Ok(Reply::Integer(0));
            }
            let update = Update {
                key: dest.key.clone(),
                op: Op::Merge(Box::new(union)),
                ts_us: None,
                id: None,
            };
            apply(session, &dest.view.name, vec![update]).await?;
            Ok(if name == "PFADD" {
                Reply::Integer(1)
            } else {
                Reply::ok()
            })
        }
        _ if set_algebra::handles(name) => set_algebra::run(session, name, args).await,
        _ if hashes::handles(name) => hashes::run(session, name, args).await,
        _ if scan::handles(name) => scan::run(session, name, args).await,
        _ => Err(Reply::error(format!("ERR unknown command '{name}'"))),
    }
}
