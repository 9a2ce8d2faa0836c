//! The node's memory limit and how it is split between the parts that grow with the
//! data: the owner shards' state caches (shed past their share, `shard/cache.rs`), the
//! LSM's block cache and the journal (which bounds the memtables).

/// Smallest accepted [`crate::StoreConfig::memory_limit`]: below it the fixed costs (threads,
/// buffers, the smallest journal fjall accepts) leave the caches nothing.
pub const MIN_MEMORY_LIMIT: u64 = 512 * MIB;

pub(crate) const MIB: u64 = 1024 * 1024;

/// A quarter of the machine's RAM (`MemTotal` in `/proc/meminfo`), at least
/// [`MIN_MEMORY_LIMIT`]; 2 GiB where the RAM size cannot be read.
pub fn default_memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    total
        .map_or(2048 * MIB, |bytes| bytes / 4)
        .max(MIN_MEMORY_LIMIT)
}

/// How [`crate::StoreConfig::memory_limit`] is split, measured with `bench/memory.sh`
/// and a peak sampler (10 M keys in 1 GiB). The owner shards' state caches get a
/// quarter: they grow with the keys, and past their share cold states are shed to the
/// LSM. Memtables are the other part that grows with writes: the journal gets an eighth
/// (between fjall's minimum of 64 MiB and its default of 512 MiB; memtables are flushed
/// before the journal outgrows it, so this bounds the data they hold, which costs about
/// twice its size in a skiplist), each epoch's memtable a thirty-second and the update
/// log a sixty-fourth (at most 64 MiB: a shard checkpoints after writing that much,
/// which also bounds the states a checkpoint writes in one batch). The LSM's block cache
/// gets a sixteenth (at most 64 MiB). The rest is left for connections, queues,
/// flushes and compactions in flight and the allocator's slack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryShares {
    /// Each owner shard's cache budget, bytes.
    pub cache_per_shard: u64,
    /// The LSM block cache, bytes.
    pub block_cache: u64,
    /// The journal's size bound, bytes.
    pub journal: u64,
    /// The most an epoch keyspace's memtable holds before it is flushed, bytes.
    pub epoch_memtable: u64,
    /// Update-log bytes an owner shard writes before it checkpoints, and the log
    /// keyspace's memtable size.
    pub log: u64,
}

impl MemoryShares {
    /// The shares of `limit` for `shards` owner shards. The journal never gets less than
    /// fjall's minimum of 64 MiB, so a limit below [`MIN_MEMORY_LIMIT`] (which the command
    /// line refuses; tests use it to make the caches shed early) is not kept.
    pub fn of(limit: u64, shards: usize) -> MemoryShares {
        MemoryShares {
            cache_per_shard: limit / 4 / shards.max(1) as u64,
            block_cache: (limit / 16).min(64 * MIB),
            journal: (limit / 8).clamp(64 * MIB, 512 * MIB),
            epoch_memtable: (limit / 32).max(MIB),
            log: (limit / 64).clamp(4 * MIB, 64 * MIB),
        }
    }
}
