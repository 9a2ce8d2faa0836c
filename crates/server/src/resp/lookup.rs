//! Looking keys up and writing them for a command: a key's target (view and key), its
//! reading at the connection's consistency, the reading as a Redis string, updates
//! applied with the first refusal as the reply, and the arity check every data command
//! makes. Shared by the read, hash and set-algebra commands.

use bytes::Bytes;
use speedlayer_api::{validate, ApplyKind, Update, View};
use speedlayer_core::{Op, OpError, Reading, Value};
use speedlayer_resp::Reply;

use super::args::{arity, request_error, wrongtype};
use super::keys::{resolve, Target};
use super::session::Session;

/// A reading as a Redis string: counters and max/min render their integer (as Redis
/// renders an integer-valued string), registers their bytes. Sets and HLLs are not
/// strings: `Err`.
pub(super) fn string_of(reading: &Reading) -> Result<Option<Bytes>, ()> {
    match reading {
        Reading::Count { total, .. } => Ok(Some(Bytes::from(total.to_string()))),
        Reading::State(Value::Register(r)) => Ok(r.get().map(Bytes::copy_from_slice)),
        Reading::State(Value::Max(e) | Value::Min(e)) => {
            Ok(e.get().map(|v| Bytes::from(v.to_string())))
        }
        Reading::State(_) | Reading::Distinct { .. } => Err(()),
    }
}

/// Where `key` (and `field`, for a hash) lives.
pub(super) fn target(
    session: &Session,
    key: &Bytes,
    field: Option<&Bytes>,
) -> Result<Target, Reply> {
    resolve(&*session.shared.coordinator, key, field.map(|f| &f[..]))
}

/// The reading of `target` at the connection's consistency (`None` when absent).
pub(super) async fn read(session: &Session, target: &Target) -> Result<Option<Reading>, Reply> {
    let coordinator = &session.shared.coordinator;
    let readings = coordinator
        .get_many(
            &target.view.name,
            vec![target.key.clone()],
            session.options().consistency,
        )
        .await
        .map_err(|e| request_error(&e))?;
    Ok(readings.into_iter().next().flatten())
}

/// The reading of `target` restricted to `members` when it is a set (what `SISMEMBER`
/// and `SMISMEMBER` need; see `Coordinator::read_members`).
pub(super) async fn read_members(
    session: &Session,
    target: &Target,
    members: Vec<Vec<u8>>,
) -> Result<Option<Reading>, Reply> {
    let coordinator = &session.shared.coordinator;
    let readings = coordinator
        .get_many_members(
            &target.view.name,
            vec![target.key.clone()],
            members,
            session.options().consistency,
        )
        .await
        .map_err(|e| request_error(&e))?;
    Ok(readings.into_iter().next().flatten())
}

/// `Err(arity)` unless `ok`.
pub(super) fn check(ok: bool, name: &str) -> Result<(), Reply> {
    if ok {
        Ok(())
    } else {
        Err(arity(name))
    }
}

/// Applies `updates` to `view` at the connection's consistency; the first refused
/// update's error as the reply (WRONGTYPE for a key of another type).
pub(super) async fn apply(
    session: &Session,
    view: &str,
    updates: Vec<Update>,
) -> Result<(), Reply> {
    let results = session
        .shared
        .coordinator
        .apply(view, updates, session.options(), ApplyKind::Plain)
        .await
        .map_err(|e| request_error(&e))?;
    match results.into_iter().find_map(Result::err) {
        Some(OpError::WrongOp { .. }) => Err(wrongtype()),
        Some(e) => Err(Reply::error(format!("ERR {e}"))),
        None => Ok(()),
    }
}

/// The update `SET`-like commands (MSET, HSET) make of `target` and `value`, checked
/// against the target's view (WRONGTYPE when its type takes no `set`).
pub(super) fn set_update(
    target: Target,
    value: &Bytes,
) -> Result<(std::sync::Arc<View>, Update), Reply> {
    let update = Update {
        key: target.key,
        op: Op::Set(value.to_vec()),
        ts_us: None,
        id: None,
    };
    validate(&target.view, &update).map_err(|_| wrongtype())?;
    Ok((target.view, update))
}
