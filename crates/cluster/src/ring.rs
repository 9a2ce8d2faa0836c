//! The ring: a fixed number of partitions, each with an ordered list of the nodes that
//! own it.
//!
//! A key's partition is the contiguous range of the placement hash space
//! ([`speedlayer_core::placement_hash`], a fixed-seed xxh3 of the partition key) it falls
//! in: the space is cut into `partitions` equal ranges, so every node (and every
//! version) places a key alike, and one partition's keys are one hash range, which is
//! what anti-entropy compares and (later) what a ring change streams. Each partition orders the members by
//! rendezvous hashing (`xxh3(partition ‖ member)`, highest first): the first N are its
//! **preference list**, the rest, in order, its **fallbacks** for sloppy quorums. Every
//! node computes the same ring from the same member set (the cluster addresses), with no
//! coordination, and adding a member moves only the partitions it wins.

use xxhash_rust::xxh3::xxh3_64;

/// Default number of partitions (fixed at cluster creation: every node must use the same).
pub const DEFAULT_PARTITIONS: u32 = 256;

/// The ring of one cluster at one moment: who owns each partition. Members are
/// identified by their cluster address; preference lists hold their indexes in the
/// node's member table ([`crate::membership`]), which stay valid across ring changes.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Sorted names of the members that own data.
    members: Vec<String>,
    replicas: usize,
    /// Per partition, every member (as a member-table index) in preference order.
    orders: Vec<Vec<usize>>,
    version: u64,
}

impl Ring {
    /// The ring of `members` (deduplicated and sorted, so every node agrees) with
    /// `partitions` partitions and `replicas` owners per partition (capped at the member
    /// count); a member's index is its position in the sorted list.
    pub fn new(mut members: Vec<String>, partitions: u32, replicas: usize) -> Ring {
        members.sort();
        members.dedup();
        let indexed = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        Ring::of(indexed, partitions, replicas)
    }

    /// The ring of `members`, each given with its member-table index.
    pub fn of(mut members: Vec<(String, usize)>, partitions: u32, replicas: usize) -> Ring {
        members.sort();
        members.dedup_by(|a, b| a.0 == b.0);
        let partitions = partitions.max(1);
        let orders = (0..partitions)
            .map(|p| {
                let mut order: Vec<usize> = (0..members.len()).collect();
                order.sort_by_key(|&m| {
                    let mut bytes = p.to_be_bytes().to_vec();
                    bytes.extend_from_slice(members[m].0.as_bytes());
                    std::cmp::Reverse(xxh3_64(&bytes))
                });
                order.into_iter().map(|m| members[m].1).collect()
            })
            .collect();
        let names: Vec<String> = members.into_iter().map(|(name, _)| name).collect();
        Ring {
            replicas: replicas.clamp(1, names.len().max(1)),
            version: xxh3_64(names.join(",").as_bytes()),
            members: names,
            orders,
        }
    }

    /// The members that own data, sorted by name.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Identifies the member set: equal on every node that sees the same owners.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// True when `member` (a member-table index) owns data in this ring.
    pub fn contains(&self, member: usize) -> bool {
        self.orders.first().is_some_and(|o| o.contains(&member))
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.orders.len() as u32
    }

    /// Owners per partition (N).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The partition of a partition key.
    pub fn partition_of(&self, partition_key: &[u8]) -> u32 {
        self.partition_of_hash(speedlayer_core::placement_hash(partition_key))
    }

    /// The partition a placement hash falls in: `hash × partitions / 2^64`, so partition
    /// `p` holds the hashes of [`Ring::hash_range`]`(p)`.
    pub fn partition_of_hash(&self, hash: u64) -> u32 {
        ((u128::from(hash) * self.orders.len() as u128) >> 64) as u32
    }

    /// The placement hashes of `partition`, first and last included.
    pub fn hash_range(&self, partition: u32) -> (u64, u64) {
        let n = self.orders.len() as u128;
        let p = u128::from(partition) % n;
        // The smallest h with h × n ≥ p × 2^64, for p and p + 1.
        let start = |p: u128| (p << 64).div_ceil(n);
        let first = start(p) as u64;
        let last = (start(p + 1) - 1) as u64;
        (first, last)
    }

    /// The preference list of `partition`: its N owners, first choice first.
    pub fn preference_list(&self, partition: u32) -> &[usize] {
        let order = &self.orders[partition as usize % self.orders.len()];
        &order[..self.replicas.min(order.len())]
    }

    /// Groups `items` by their partition's whole ring order (owners, then fallbacks), so
    /// a batch makes one call per node however many partitions it touches. Each group
    /// names one of its partitions (they all share owners and fallbacks) and holds its
    /// items with their index in `items`.
    pub fn group<T>(
        &self,
        items: Vec<T>,
        partition_key: impl Fn(&T) -> &[u8],
    ) -> Vec<(u32, Vec<(usize, T)>)> {
        let mut group_of: std::collections::HashMap<&[usize], usize> =
            std::collections::HashMap::new();
        let mut groups: Vec<(u32, Vec<(usize, T)>)> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let partition = self.partition_of(partition_key(&item));
            let order = self.orders[partition as usize].as_slice();
            let at = *group_of.entry(order).or_insert_with(|| {
                groups.push((partition, Vec::new()));
                groups.len() - 1
            });
            groups[at].1.push((index, item));
        }
        groups
    }

    /// The members after the preference list, in the order sloppy writes try them.
    pub fn fallbacks(&self, partition: u32) -> &[usize] {
        let order = &self.orders[partition as usize % self.orders.len()];
        &order[self.replicas.min(order.len())..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    #[test]
    fn preference_lists_hold_distinct_nodes_and_agree_whatever_the_member_order() {
        let a = Ring::new(members(5), 256, 3);
        let mut reversed = members(5);
        reversed.reverse();
        let b = Ring::new(reversed, 256, 3);
        for p in 0..256 {
            let list = a.preference_list(p);
            assert_eq!(list.len(), 3);
            let mut sorted = list.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "distinct owners");
            assert_eq!(list, b.preference_list(p));
            assert_eq!(a.fallbacks(p).len(), 2);
        }
    }

    #[test]
    fn partitions_spread_over_members() {
        let ring = Ring::new(members(4), 256, 3);
        let mut firsts = [0usize; 4];
        for p in 0..256 {
            firsts[ring.preference_list(p)[0]] += 1;
        }
        for count in firsts {
            assert!((32..=96).contains(&count), "first choices {firsts:?}");
        }
    }

    #[test]
    fn hash_ranges_tile_the_hash_space_and_agree_with_partition_of() {
        for partitions in [1, 3, 7, 256, 65_536] {
            let ring = Ring::new(members(3), partitions, 3);
            let mut next = 0u128;
            for p in 0..partitions {
                let (first, last) = ring.hash_range(p);
                assert_eq!(u128::from(first), next, "partition {p} of {partitions}");
                assert!(first <= last);
                for h in [first, last, first / 2 + last / 2] {
                    assert_eq!(ring.partition_of_hash(h), p, "{h} of {partitions}");
                }
                next = u128::from(last) + 1;
            }
            assert_eq!(
                next,
                1u128 << 64,
                "{partitions} partitions cover every hash"
            );
        }
    }

    #[test]
    fn replicas_are_capped_at_the_member_count() {
        let ring = Ring::new(members(1), 16, 3);
        assert_eq!(ring.replicas(), 1);
        assert_eq!(ring.preference_list(3), &[0]);
        assert!(ring.fallbacks(3).is_empty());
    }
}
