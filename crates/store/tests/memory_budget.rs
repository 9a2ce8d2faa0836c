//! The owner shards' state caches stay within their share of the memory limit: past it,
//! cold states are shed to the LSM, and a shed state reads and updates exactly as if it
//! had stayed cached (across a reopen too).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prometheus_client::registry::Registry;
use speedlayer_core::{Key, Op, Outcome, Reading, ValueType};
use speedlayer_store::{MemoryShares, Store, StoreConfig, Update, ViewSpec};

const MIB: u64 = 1024 * 1024;
/// Far below what the command line accepts, so that a few thousand keys overflow it.
const LIMIT: u64 = 8 * MIB;
const SHARDS: usize = 2;
const KEYS: usize = 40_000;
const BATCH: usize = 1_000;
/// One fixed event time: every key in one epoch, which starts out empty ("complete").
const TS_US: i64 = 1_700_000_000_000_000;

fn open(dir: &std::path::Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.memory_limit = LIMIT;
    config.shards = SHARDS;
    Store::open(config, &mut Registry::default()).expect("open store")
}

fn key(i: usize) -> Key {
    Key::new(format!("page:{i}").into_bytes(), Vec::new()).unwrap()
}

async fn incr_all(store: &Store) {
    for start in (0..KEYS).step_by(BATCH) {
        let updates = (start..start + BATCH)
            .map(|i| Update {
                key: key(i),
                op: Op::Incr(1),
                ts_us: Some(TS_US),
                id: None,
            })
            .collect();
        for result in store.apply("hits", updates).await.unwrap() {
            assert_eq!(result.unwrap().outcome, Outcome::Applied);
        }
    }
}

async fn assert_all_count(store: &Store, expected: i64) {
    for start in (0..KEYS).step_by(BATCH) {
        let keys = (start..start + BATCH).map(key).collect();
        let readings = store.get_many("hits", keys).await.unwrap();
        for (i, reading) in (start..).zip(readings) {
            match reading {
                Some(Reading::Count { total, .. }) => {
                    assert_eq!(total, expected, "page:{i}")
                }
                other => panic!("page:{i}: {other:?}, expected a count of {expected}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_past_the_budget_are_shed_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let budget = MemoryShares::of(LIMIT, SHARDS).cache_per_shard * SHARDS as u64;
    {
        let store = open(dir.path());
        store
            .declare_view("hits", ViewSpec::new(ValueType::Counter))
            .unwrap();
        incr_all(&store).await;
        let shed = store.metrics().cache_evictions.get();
        let cached = store.metrics().cache_bytes.get();
        assert!(
            shed > 0,
            "{KEYS} keys in a {budget}-byte budget: nothing was shed"
        );
        assert!(
            (0..=budget as i64).contains(&cached),
            "the caches are charged {cached} bytes, over their budget of {budget}"
        );
        // Updates of shed states load them from the LSM: nothing counted before is lost
        // and nothing is counted twice.
        incr_all(&store).await;
        assert_all_count(&store, 2).await;
        assert!(store.metrics().cache_evictions.get() > shed);
    }
    let store = open(dir.path());
    assert_all_count(&store, 2).await;
}
