//! The closed set of value types a view can hold.
//!
//! A view is declared with one [`ValueType`] and every value stored under it has
//! that type; the type decides which operations apply and how replicas merge.

use std::fmt;
use std::str::FromStr;

/// The kind of CRDT a view stores.
///
/// Every variant is a state-based CRDT (a join-semilattice), so replicas that
/// diverge always converge by merging. The lowercase names are part of the
/// external contract (HTTP declarations, CLI); the one-byte [`tag`](Self::tag)
/// is part of the stored encoding and must never be renumbered.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// PN-counter: increments and decrements.
    Counter,
    /// Grow-only counter: increments only.
    Gcounter,
    /// Largest integer seen.
    Max,
    /// Smallest integer seen.
    Min,
    /// Last-writer-wins byte string.
    Register,
    /// Add-wins observed-remove set of byte strings.
    Set,
    /// HyperLogLog distinct-count sketch.
    Hll,
}

/// A type name that is not one of [`ValueType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown value type '{0}' (expected one of: counter, gcounter, max, min, register, set, hll)"
)]
pub struct UnknownValueType(pub String);

impl ValueType {
    /// Every value type, in tag order.
    pub const ALL: [ValueType; 7] = [
        ValueType::Counter,
        ValueType::Gcounter,
        ValueType::Max,
        ValueType::Min,
        ValueType::Register,
        ValueType::Set,
        ValueType::Hll,
    ];

    /// The stable lowercase name used by the HTTP API, RESP and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Counter => "counter",
            ValueType::Gcounter => "gcounter",
            ValueType::Max => "max",
            ValueType::Min => "min",
            ValueType::Register => "register",
            ValueType::Set => "set",
            ValueType::Hll => "hll",
        }
    }

    /// The first byte of every encoded [`Value`](crate::Value) of this type.
    ///
    /// Stored on disk and sent between nodes: never renumber. Zero is unused so
    /// that an all-zero buffer is never mistaken for a value.
    pub fn tag(self) -> u8 {
        match self {
            ValueType::Counter => 1,
            ValueType::Gcounter => 2,
            ValueType::Max => 3,
            ValueType::Min => 4,
            ValueType::Register => 5,
            ValueType::Set => 6,
            ValueType::Hll => 7,
        }
    }

    /// The type whose [`tag`](Self::tag) is `tag`, if any.
    pub fn from_tag(tag: u8) -> Option<ValueType> {
        ValueType::ALL.into_iter().find(|t| t.tag() == tag)
    }
}

impl FromStr for ValueType {
    type Err = UnknownValueType;

    /// Parses a type name; ASCII case is ignored so `Counter` from a CLI works.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ValueType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownValueType(s.to_owned()))
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_tags_are_distinct() {
        for t in ValueType::ALL {
            assert_eq!(t.name().parse::<ValueType>(), Ok(t));
            assert_eq!(ValueType::from_tag(t.tag()), Some(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(ValueType::from_tag(0), None);
        assert_eq!("HLL".parse::<ValueType>(), Ok(ValueType::Hll));
    }

    #[test]
    fn unknown_name_lists_valid_names() {
        let err = "bitmap".parse::<ValueType>().unwrap_err().to_string();
        assert!(err.contains("bitmap") && err.contains("gcounter") && err.contains("hll"));
    }

    #[test]
    fn serde_uses_lowercase_names() {
        let json = serde_json::to_string(&ValueType::Gcounter).unwrap();
        assert_eq!(json, "\"gcounter\"");
        let back: ValueType = serde_json::from_str("\"register\"").unwrap();
        assert_eq!(back, ValueType::Register);
    }
}
