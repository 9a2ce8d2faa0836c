//! Approximate heap footprint of states and keys, for memory budgets.
//!
//! A node keeps the states of hot keys in memory and must stay within a configured
//! memory limit at any number of keys, so its owner shards account what each cached
//! state costs and shed cold ones past their budget. The figures here are estimates of
//! what the allocator holds for a value beyond its inline size: each heap block's
//! payload plus a fixed per-block overhead. They are deliberately cheap (one pass over a
//! state's slots or members, no allocation) and err on the high side; the budget is
//! checked against measured resident memory in `bench/memory.sh`.

/// Bytes an allocator spends per heap block beyond its payload (size class rounding and
/// headers), averaged.
pub const BLOCK_OVERHEAD: usize = 16;

/// Footprint of a heap block of `payload` bytes; an empty one is not allocated.
pub const fn block(payload: usize) -> usize {
    if payload == 0 {
        0
    } else {
        payload + BLOCK_OVERHEAD
    }
}

/// Footprint of a B-tree of `len` entries of `entry` bytes each (keys plus values): std's
/// B-trees allocate nodes of 11 entries, at least half full except a lone root.
pub const fn btree(len: usize, entry: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let nodes = len.div_ceil(6);
    nodes * block(11 * entry + 16)
}

#[cfg(test)]
mod tests {
    use crate::{ApplyCtx, Op, Value, ValueType};

    fn ctx(unique: u64) -> ApplyCtx<'static> {
        ApplyCtx {
            node: "10.0.0.1:7000#1",
            id: None,
            ts_us: 1,
            unique,
        }
    }

    #[test]
    fn a_counter_with_one_slot_costs_one_small_block_and_its_name() {
        let mut counter = Value::new(ValueType::Counter);
        assert_eq!(counter.heap_bytes(), 0);
        counter.apply(&Op::Incr(5), &ctx(1)).unwrap();
        let one_slot = counter.heap_bytes();
        // A block of one (name, sides) entry and the name's bytes: no B-tree node.
        assert!((40..=120).contains(&one_slot), "{one_slot}");
    }

    #[test]
    fn a_set_costs_at_least_its_members_bytes_and_grows_with_them() {
        let mut set = Value::new(ValueType::Set);
        let mut last = set.heap_bytes();
        for round in 0..10u64 {
            let members: Vec<Vec<u8>> = (0..100)
                .map(|i| format!("member-{round}-{i:040}").into_bytes())
                .collect();
            let bytes: usize = members.iter().map(Vec::len).sum();
            set.apply(&Op::Add(members), &ctx(round)).unwrap();
            let now = set.heap_bytes();
            assert!(now >= last + bytes, "{last} + {bytes} > {now}");
            last = now;
        }
    }

    #[test]
    fn a_value_fits_in_a_cache_line() {
        // Owner shards cache states by the million; a counter of anonymous increments
        // keeps its rarely used parts boxed so that this holds (it was 128 bytes), and so does
        // a set its tombstones and digest.
        assert!(
            std::mem::size_of::<Value>() <= 56,
            "{}",
            std::mem::size_of::<Value>()
        );
    }
}
