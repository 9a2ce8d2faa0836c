//! Keys: a partition key that decides placement and a clustering key that
//! orders rows within the partition.
//!
//! The byte encoding is what the storage engine sorts, so it is designed for
//! that: a big-endian length of the partition, the partition, then the
//! clustering bytes. All rows of one partition therefore share a prefix
//! ([`Key::partition_prefix`]) and sort by clustering bytes, which makes a range
//! read ("hours 10 to 17 of /about") one contiguous scan.

use crate::codec::DecodeError;

/// Longest accepted partition or clustering key, in bytes. Keeps keys cheap to
/// store and hash, and always fits the encoding's `u16` length.
pub const MAX_KEY_PART_LEN: usize = 1024;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The partition key decides placement, so it must not be empty.
    #[error("partition key must not be empty")]
    EmptyPartition,
    /// A part exceeds [`MAX_KEY_PART_LEN`].
    #[error("{part} key is {len} bytes; the limit is {limit}")]
    TooLong {
        /// `"partition"` or `"clustering"`.
        part: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit, [`MAX_KEY_PART_LEN`].
        limit: usize,
    },
}

/// The address of one value within a view.
///
/// Invariant when built through [`Key::new`] or [`Key::decode`]: the partition
/// is non-empty and both parts are at most [`MAX_KEY_PART_LEN`] bytes. The
/// derived `Ord` compares partition then clustering; the *encoded* order
/// differs across partitions (length first) but agrees within one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Decides which replicas hold the key.
    pub partition: Vec<u8>,
    /// Orders rows within the partition; may be empty.
    pub clustering: Vec<u8>,
}

impl Key {
    /// Approximate heap bytes this key holds beyond `size_of::<Key>()`
    /// ([`crate::footprint`]).
    pub fn heap_bytes(&self) -> usize {
        crate::footprint::block(self.partition.len())
            + crate::footprint::block(self.clustering.len())
    }

    /// Builds a key, checking the invariant.
    pub fn new(partition: Vec<u8>, clustering: Vec<u8>) -> Result<Key, KeyError> {
        if partition.is_empty() {
            return Err(KeyError::EmptyPartition);
        }
        for (part, bytes) in [("partition", &partition), ("clustering", &clustering)] {
            if bytes.len() > MAX_KEY_PART_LEN {
                return Err(KeyError::TooLong {
                    part,
                    len: bytes.len(),
                    limit: MAX_KEY_PART_LEN,
                });
            }
        }
        Ok(Key {
            partition,
            clustering,
        })
    }

    /// `u16` big-endian `len(partition)` ‖ partition ‖ clustering.
    ///
    /// A key built by hand with a partition longer than `u16::MAX` (which
    /// [`Key::new`] refuses) has its partition truncated rather than panicking.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Key::partition_prefix(&self.partition);
        out.extend_from_slice(&self.clustering);
        out
    }

    /// Inverse of [`encode`](Self::encode); enforces the same invariant as
    /// [`Key::new`].
    pub fn decode(bytes: &[u8]) -> Result<Key, DecodeError> {
        let (len, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(DecodeError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len > rest.len() {
            return Err(DecodeError::Truncated);
        }
        let (partition, clustering) = rest.split_at(len);
        Key::new(partition.to_vec(), clustering.to_vec()).map_err(|e| match e {
            KeyError::EmptyPartition => DecodeError::Invalid("key has an empty partition"),
            KeyError::TooLong { .. } => DecodeError::Invalid("key part too long"),
        })
    }

    /// [`placement_hash`] of this key's partition.
    pub fn placement(&self) -> u64 {
        placement_hash(&self.partition)
    }

    /// `u16` big-endian length ‖ partition: the prefix every encoded key of
    /// that partition starts with, for prefix scans.
    pub fn partition_prefix(partition: &[u8]) -> Vec<u8> {
        let len = partition.len().min(usize::from(u16::MAX));
        let mut out = Vec::with_capacity(2 + len);
        // `len` fits u16 by the min above.
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(partition.get(..len).unwrap_or(partition));
        out
    }
}

/// Where a key lives in the cluster: `xxh3(partition key)`, a fixed-seed hash, so every
/// node and every version places a key alike. The ring cuts this hash space into
/// contiguous ranges (its partitions), and storage keeps each key's anti-entropy hash
/// under this value, so one partition's hashes are one contiguous scan.
pub fn placement_hash(partition_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(partition_key)
}

/// Lets hash maps keyed by [`Key`] look up by reference and clone only on insert.
impl From<&Key> for Key {
    fn from(key: &Key) -> Key {
        key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_invariant() {
        assert_eq!(Key::new(vec![], vec![]), Err(KeyError::EmptyPartition));
        let long = vec![0; MAX_KEY_PART_LEN + 1];
        assert!(matches!(
            Key::new(b"p".to_vec(), long.clone()),
            Err(KeyError::TooLong {
                part: "clustering",
                ..
            })
        ));
        assert!(matches!(
            Key::new(long, vec![]),
            Err(KeyError::TooLong {
                part: "partition",
                ..
            })
        ));
    }

    #[test]
    fn encoding_layout_and_errors() {
        let k = Key::new(b"ab".to_vec(), b"c".to_vec()).unwrap();
        assert_eq!(k.encode(), vec![0, 2, b'a', b'b', b'c']);
        assert!(k.encode().starts_with(&Key::partition_prefix(b"ab")));
        assert_eq!(Key::decode(&k.encode()), Ok(k));
        assert_eq!(Key::decode(&[0]), Err(DecodeError::Truncated));
        assert_eq!(Key::decode(&[0, 3, b'a']), Err(DecodeError::Truncated));
        assert!(Key::decode(&[0, 0, b'a']).is_err());
    }
}
