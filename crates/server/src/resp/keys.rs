//! From a Redis key to a view and a row.
//!
//! `view:partition` and `view:partition:clustering` address a declared view (the first
//! `:` ends the view name, the second ends the partition; the clustering key may contain
//! further colons). Any other key is the partition of a row in the implicit `redis` view,
//! whose keys each take the type of their first write, so `INCR hits` just works and a
//! later `SADD hits x` answers WRONGTYPE as Redis would.

use std::sync::Arc;

use speedlayer_api::{Coordinator, View, ViewSpec, ViewType};
use speedlayer_core::Key;
use speedlayer_resp::Reply;

/// Name of the implicit view of keys that name no declared view.
pub const REDIS_VIEW: &str = "redis";
/// Epoch length of the implicit view: ~31,700 years, i.e. a single epoch. Redis keys do
/// not expire by time bucket, and one epoch lets a key's owner check its type on every
/// write (a key's type could otherwise differ between epochs).
pub const REDIS_EPOCH_SECS: u64 = 1_000_000_000_000;

/// The declaration of the implicit view.
pub fn redis_view_spec() -> ViewSpec {
    ViewSpec {
        value_type: ViewType::Any,
        epoch_secs: REDIS_EPOCH_SECS,
        mapping: None,
    }
}

/// A resolved Redis key.
#[derive(Clone, Debug)]
pub struct Target {
    /// The view holding the row.
    pub view: Arc<View>,
    /// The row.
    pub key: Key,
}

/// Resolves `raw` (and, for hash commands, `field` as the clustering key).
pub fn resolve(
    coordinator: &dyn Coordinator,
    raw: &[u8],
    field: Option<&[u8]>,
) -> Result<Target, Reply> {
    if let Some(colon) = raw.iter().position(|&b| b == b':') {
        if let Ok(name) = std::str::from_utf8(&raw[..colon]) {
            if name != REDIS_VIEW {
                if let Ok(view) = coordinator.view(name) {
                    let rest = &raw[colon + 1..];
                    let (partition, clustering) = match rest.iter().position(|&b| b == b':') {
                        Some(c) => (&rest[..c], &rest[c + 1..]),
                        None => (rest, &b""[..]),
                    };
                    let clustering = match field {
                        Some(_) if !clustering.is_empty() => {
                            return Err(Reply::error(
                                "ERR a hash key names its view and partition only (view:partition); the field is the clustering key",
                            ))
                        }
                        Some(field) => field,
                        None => clustering,
                    };
                    return row(view, partition, clustering);
                }
            }
        }
    }
    let view = coordinator
        .view(REDIS_VIEW)
        .map_err(|e| Reply::error(format!("ERR {e}")))?;
    row(view, raw, field.unwrap_or_default())
}

fn row(view: Arc<View>, partition: &[u8], clustering: &[u8]) -> Result<Target, Reply> {
    let key = Key::new(partition.to_vec(), clustering.to_vec())
        .map_err(|e| Reply::error(format!("ERR invalid key: {e}")))?;
    Ok(Target { view, key })
}
