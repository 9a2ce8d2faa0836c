//! Commands over several sets, or picking from one: SINTER, SUNION, SDIFF (and their
//! STORE forms), SRANDMEMBER; SPOP is refused.
//!
//! Each source set is read at the connection's consistency, one key after the other (not
//! a snapshot across keys: a write between two reads may be seen in one and not the
//! other). A STORE form replaces the destination as Redis does, in two steps: a delete
//! of what the destination held (observed-remove), then an add of the result. A
//! concurrent add to the destination survives, as any add a delete did not see.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use speedlayer_api::Update;
use speedlayer_core::{Op, Reading, Value};
use speedlayer_resp::Reply;

use super::args::{integer, request_error, wrongtype};
use super::lookup::{apply, check, read, target};
use super::session::Session;

/// True for the commands this module executes.
pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "SINTER"
            | "SUNION"
            | "SDIFF"
            | "SINTERSTORE"
            | "SUNIONSTORE"
            | "SDIFFSTORE"
            | "SRANDMEMBER"
            | "SPOP"
    )
}

/// The members of set `key` (empty when absent); WRONGTYPE for another type.
async fn members(session: &Session, key: &Bytes) -> Result<BTreeSet<Vec<u8>>, Reply> {
    let t = target(session, key, None)?;
    match read(session, &t).await? {
        None => Ok(BTreeSet::new()),
        Some(Reading::State(Value::Set(set))) => {
            Ok(set.members().into_iter().map(<[u8]>::to_vec).collect())
        }
        Some(_) => Err(wrongtype()),
    }
}

/// Runs one of [`handles`]'s commands.
pub async fn run(session: &Session, name: &str, args: &[Bytes]) -> Result<Reply, Reply> {
    match name {
        "SPOP" => Err(Reply::error(
            "ERR SPOP is not supported: an add-wins set has no random removal its replicas agree on; remove named members with SREM",
        )),
        "SRANDMEMBER" => {
            check((2..=3).contains(&args.len()), name)?;
            let all: Vec<Vec<u8>> = members(session, &args[1]).await?.into_iter().collect();
            random_members(&all, args.get(2))
        }
        "SINTER" | "SUNION" | "SDIFF" => {
            check(args.len() >= 2, name)?;
            let result = combine(session, name, &args[1..]).await?;
            Ok(Reply::Set(
                result.into_iter().map(|m| Reply::Bulk(Bytes::from(m))).collect(),
            ))
        }
        _ => {
            // The STORE forms: destination first.
            check(args.len() >= 3, name)?;
            let op = name.trim_end_matches("STORE");
            let result = combine(session, op, &args[2..]).await?;
            store(session, &args[1], result).await
        }
    }
}

async fn combine(session: &Session, op: &str, keys: &[Bytes]) -> Result<BTreeSet<Vec<u8>>, Reply> {
    let mut result = members(session, &keys[0]).await?;
    for key in &keys[1..] {
        let next = members(session, key).await?;
        match op {
            "SINTER" => result.retain(|m| next.contains(m)),
            "SUNION" => result.extend(next),
            _ => result.retain(|m| !next.contains(m)),
        }
    }
    Ok(result)
}

/// Replaces set `dest` by `result`; answers its size.
async fn store(session: &Session, dest: &Bytes, result: BTreeSet<Vec<u8>>) -> Result<Reply, Reply> {
    let t = target(session, dest, None)?;
    let coordinator = &session.shared.coordinator;
    match read(session, &t).await? {
        None => {}
        Some(Reading::State(Value::Set(_))) => {
            coordinator
                .delete(&t.view.name, vec![t.key.clone()], session.options())
                .await
                .map_err(|e| request_error(&e))?;
        }
        // Redis overwrites a key of any type; here a key keeps its type.
        Some(_) => return Err(wrongtype()),
    }
    let size = result.len() as i64;
    if size > 0 {
        let update = Update {
            key: t.key,
            op: Op::Add(result.into_iter().collect()),
            ts_us: None,
            id: None,
        };
        apply(session, &t.view.name, vec![update]).await?;
    }
    Ok(Reply::Integer(size))
}

/// SRANDMEMBER's answer: one member (nil when empty) without a count; with a positive
/// count up to that many distinct members; with a negative one that many, repeats
/// allowed.
fn random_members(all: &[Vec<u8>], count: Option<&Bytes>) -> Result<Reply, Reply> {
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let bulk = |m: &Vec<u8>| Reply::Bulk(Bytes::from(m.clone()));
    let Some(count) = count else {
        return Ok(match all.len() {
            0 => Reply::Null,
            n => bulk(&all[(random() % n as u64) as usize]),
        });
    };
    let count = integer(count)?;
    if all.is_empty() {
        return Ok(Reply::Array(Vec::new()));
    }
    if count >= 0 {
        let mut picked: Vec<&Vec<u8>> = all.iter().collect();
        // A partial Fisher-Yates shuffle: the first `count` are a uniform sample.
        let take = (count as usize).min(picked.len());
        for i in 0..take {
            let j = i + (random() % (picked.len() - i) as u64) as usize;
            picked.swap(i, j);
        }
        Ok(Reply::Array(
            picked[..take].iter().map(|m| bulk(m)).collect(),
        ))
    } else {
        let n = count.unsigned_abs().min(1_000_000) as usize;
        Ok(Reply::Array(
            (0..n)
                .map(|_| bulk(&all[(random() % all.len() as u64) as usize]))
                .collect(),
        ))
    }
}
