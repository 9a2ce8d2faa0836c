//! Views as users declare them: a name, a value type, an epoch length and an optional
//! event mapping. Every layer speaks of views in these types; the store persists them,
//! the coordinator spreads them, the front ends parse and render them.

use serde::{Deserialize, Serialize};
use speedlayer_core::{Op, ValueType};

use crate::error::Error;

/// Epoch length used when a declaration does not give one: one hour, the seed's bucket.
pub const DEFAULT_EPOCH_SECS: u64 = 3600;
/// Longest accepted view name.
pub const MAX_VIEW_NAME_LEN: usize = 128;

/// The type of a view's values: one CRDT type for every key, or `any`, where each key
/// takes the type of its first write (what Redis clients expect of their keys; a later
/// write of another type is refused as WRONGTYPE by the key's owner shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewType {
    /// Every key holds this type.
    Typed(ValueType),
    /// Each key's type is set by its first write.
    Any,
}

impl ViewType {
    /// The type a key of this view gets when `op` is its first write.
    pub fn type_for(self, op: &Op) -> ValueType {
        match self {
            ViewType::Typed(t) => t,
            ViewType::Any => op.natural_type(),
        }
    }
}

impl ViewType {
    /// The one type of every key, `None` for an `any` view.
    pub fn typed(self) -> Option<ValueType> {
        match self {
            ViewType::Typed(t) => Some(t),
            ViewType::Any => None,
        }
    }
}

impl std::fmt::Display for ViewType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewType::Typed(t) => t.fmt(f),
            ViewType::Any => f.write_str("any"),
        }
    }
}

impl From<ValueType> for ViewType {
    fn from(t: ValueType) -> Self {
        ViewType::Typed(t)
    }
}

impl Serialize for ViewType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ViewType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name.eq_ignore_ascii_case("any") {
            return Ok(ViewType::Any);
        }
        name.parse::<ValueType>()
            .map(ViewType::Typed)
            .map_err(serde::de::Error::custom)
    }
}

/// What a user declares: the view's value type and epoch length.
///
/// Invariant once stored: neither field changes (a redeclaration with other values is a
/// [`Error::Conflict`]), because stored states and epoch keyspaces depend on both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// CRDT type of the view's values: `counter`, `gcounter`, `register`, `set`, `hll`,
    /// `max`, `min`, or `any` (each key takes the type of its first write).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub value_type: ViewType,
    /// Length of an epoch, the unit of expiry, in seconds.
    #[serde(default = "default_epoch_secs")]
    pub epoch_secs: u64,
    /// Which events feed the view and how ([`MappingSpec`]); `None` for a view written
    /// only by updates. Checked by the coordinator (`speedlayer_events::Mapping::compile`)
    /// at declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<MappingSpec>,
}

fn default_epoch_secs() -> u64 {
    DEFAULT_EPOCH_SECS
}

impl ViewSpec {
    /// A spec of `value_type` with the default epoch length.
    pub fn new(value_type: ValueType) -> Self {
        ViewSpec {
            value_type: ViewType::Typed(value_type),
            epoch_secs: DEFAULT_EPOCH_SECS,
            mapping: None,
        }
    }
}

/// A declared view as the node knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Numeric id naming the view's epoch keyspaces; never reused.
    pub id: u32,
    /// The view's name (`[A-Za-z0-9_.-]`, 1 to 128 bytes).
    pub name: String,
    /// Its declaration.
    #[serde(flatten)]
    pub spec: ViewSpec,
}

/// Result of a declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// The view is new.
    Created,
    /// The same declaration existed already (declaring is idempotent).
    Unchanged,
}

/// Checks a view name: non-empty, at most [`MAX_VIEW_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
/// The alphabet keeps names safe in URLs, metric labels and Redis keys (`view:partition`
/// splits on `:`).
pub fn validate_view_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_VIEW_NAME_LEN {
        Some("longer than 128 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        Some("only letters, digits, '_', '-' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidViewName {
            name: name.chars().take(MAX_VIEW_NAME_LEN).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A mapping as declared: four short expressions. Stored in the view catalog as given;
/// `speedlayer_events::Mapping::compile` checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct MappingSpec {
    /// Which events feed the view; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Partition key terms.
    pub key: String,
    /// Clustering key terms; empty when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustering: Option<String>,
    /// The op each event applies, with its operand.
    pub op: String,
}
