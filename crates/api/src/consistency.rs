//! Per-request consistency: how many replicas a read (R) or write (W) needs, and whether a
//! write may borrow nodes outside the preference list (sloppy) or not (strict).

use std::fmt;
use std::str::FromStr;

/// How many of a key's N replicas must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority: N/2 + 1.
    #[default]
    Quorum,
    /// Every replica.
    All,
    /// This node's own copy only, with no coordination (reads only; a diagnostic: what
    /// does this replica hold?).
    Local,
}

impl Consistency {
    /// Replicas needed out of `n`.
    pub fn required(self, n: usize) -> usize {
        match self {
            Consistency::One | Consistency::Local => 1,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
        }
        .min(n.max(1))
    }
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            "local" => Ok(Consistency::Local),
            _ => Err(format!(
                "unknown consistency '{s}' (expected one, quorum, all or local)"
            )),
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
            Consistency::Local => "local",
        })
    }
}

/// Whether a write that cannot reach W owners may use fallback nodes with hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QuorumMode {
    /// Fallback nodes beyond the preference list count toward W, holding hints for the
    /// owners they stand in for: available under partitions, not consistent.
    #[default]
    Sloppy,
    /// Only owners count: a write that cannot reach W of them is refused.
    Strict,
}

impl FromStr for QuorumMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sloppy" => Ok(QuorumMode::Sloppy),
            "strict" => Ok(QuorumMode::Strict),
            _ => Err(format!("unknown quorum '{s}' (expected sloppy or strict)")),
        }
    }
}

impl fmt::Display for QuorumMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuorumMode::Sloppy => "sloppy",
            QuorumMode::Strict => "strict",
        })
    }
}

/// Options of one write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// W.
    pub consistency: Consistency,
    /// Sloppy or strict quorum.
    pub quorum: QuorumMode,
}

/// Query parameters and config files spell both as their lowercase names.
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_from_str!(Consistency);
deserialize_from_str!(QuorumMode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_counts() {
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(1), 1);
        assert_eq!(Consistency::Quorum.required(4), 3);
        assert_eq!(Consistency::All.required(3), 3);
        assert_eq!(Consistency::One.required(3), 1);
        assert!("sometimes".parse::<Consistency>().is_err());
        assert_eq!("STRICT".parse::<QuorumMode>(), Ok(QuorumMode::Strict));
    }
}
