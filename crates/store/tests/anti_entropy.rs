//! What anti-entropy relies on in storage: range digests that are equal exactly when the
//! checkpointed states are, that follow every checkpoint (no stale cached root), leaves
//! and entries that narrow a difference down to the keys, and a merge that never brings
//! back a dropped epoch.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prometheus_client::registry::Registry;
use speedlayer_core::{Epoch, Key, Op, ValueType};
use speedlayer_store::digest::{leaf_range, LEAVES};
use speedlayer_store::{RangeDigests, Store, StoreConfig, Update, ViewSpec};

fn open(dir: &std::path::Path) -> Store {
    let mut registry = Registry::default();
    Store::open(StoreConfig::new(dir), &mut registry).unwrap()
}

fn key(i: u32) -> Key {
    Key::new(format!("page{i}").into_bytes(), Vec::new()).unwrap()
}

/// Increments of keys `keys` at `ts_secs` (one epoch per hour).
async fn incr(store: &Store, keys: std::ops::Range<u32>, ts_secs: i64) {
    let updates = keys
        .map(|i| Update {
            key: key(i),
            op: Op::Incr(i64::from(i) + 1),
            ts_us: Some(ts_secs * 1_000_000),
            id: None,
        })
        .collect();
    for result in store.apply("hits", updates).await.unwrap() {
        result.unwrap();
    }
}

async fn digests(store: &Store) -> RangeDigests {
    store.checkpoint().await.unwrap();
    store.range_digests(0, u64::MAX).await.unwrap()
}

/// Every state `store` holds in one epoch of `view`, as anti-entropy lists and reads them.
async fn all_states(
    store: &Store,
    view: &str,
    epoch: Epoch,
) -> Vec<(Epoch, Key, speedlayer_core::Value)> {
    let keys = store
        .range_entries(view, epoch, 0, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    store
        .epoch_states(view, epoch, keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (epoch, k, v))
        .collect()
}

/// Copies every state `from` holds into `to`, as anti-entropy would.
async fn copy_all(from: &Store, to: &Store) {
    for epoch in digests(from).await.epochs {
        let states = all_states(from, &epoch.view, epoch.epoch).await;
        let merged = to.merge_live(&epoch.view, states).await.unwrap();
        assert_eq!(merged.skipped, 0);
    }
}

/// A store in a fresh directory with the counter view `hits` declared.
fn replica() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .declare_view("hits", ViewSpec::new(ValueType::Counter))
        .unwrap();
    (dir, store)
}

const HOUR_A: i64 = 472_222 * 3600;
const HOUR_B: i64 = HOUR_A + 3600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_agree_exactly_when_the_states_do_and_narrow_a_difference_to_its_key() {
    let ((dir_a, a), (_dir_b, b)) = (replica(), replica());
    incr(&a, 0..300, HOUR_A).await;
    incr(&a, 0..50, HOUR_B).await;
    let before = digests(&a).await;
    assert_eq!(before.epochs.len(), 2);
    assert_eq!(
        before.epochs.iter().map(|e| e.digest.keys).sum::<u64>(),
        350
    );
    assert!(digests(&b).await.epochs.is_empty());

    copy_all(&a, &b).await;
    assert_eq!(digests(&a).await.epochs, digests(&b).await.epochs);

    // One more increment of one key on `a`: the cached root must not hide it.
    let changed = key(7);
    let updates = vec![Update {
        key: changed.clone(),
        op: Op::Incr(1),
        ts_us: Some(HOUR_A * 1_000_000),
        id: None,
    }];
    a.apply("hits", updates).await.unwrap();
    let (da, db) = (digests(&a).await, digests(&b).await);
    let epoch_a = Epoch(HOUR_A as u64 / 3600);
    let differing: Vec<Epoch> = da
        .epochs
        .iter()
        .zip(&db.epochs)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.epoch)
        .collect();
    assert_eq!(differing, vec![epoch_a], "only the epoch written differs");

    let la = a.range_leaves("hits", epoch_a, 0, u64::MAX).await.unwrap();
    let lb = b.range_leaves("hits", epoch_a, 0, u64::MAX).await.unwrap();
    let leaves: Vec<usize> = (0..LEAVES).filter(|&i| la[i] != lb[i]).collect();
    assert_eq!(leaves.len(), 1, "one leaf differs");
    let (first, last) = leaf_range(0, u64::MAX, leaves[0]);
    assert!((first..=last).contains(&changed.placement()));
    let ea = a.range_entries("hits", epoch_a, first, last).await.unwrap();
    let eb = b.range_entries("hits", epoch_a, first, last).await.unwrap();
    let keys: Vec<&Key> = ea
        .iter()
        .filter(|entry| !eb.contains(entry))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![&changed]);

    // The digests survive a restart (they are stored beside the states).
    drop(a);
    let a = open(dir_a.path());
    assert_eq!(digests(&a).await.epochs, da.epochs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_epoch_is_neither_compared_nor_brought_back() {
    let ((_dir_a, a), (_dir_b, b)) = (replica(), replica());
    incr(&a, 0..20, HOUR_A).await;
    incr(&a, 0..20, HOUR_B).await;
    let epoch_a = Epoch(HOUR_A as u64 / 3600);
    b.drop_epochs("hits", &[epoch_a]).await.unwrap();
    let listed = digests(&a).await;
    assert_eq!(listed.epochs.len(), 2);
    for epoch in listed.epochs {
        let states = all_states(&a, "hits", epoch.epoch).await;
        let merged = b.merge_live("hits", states).await.unwrap();
        if epoch.epoch == epoch_a {
            assert_eq!((merged.merged, merged.skipped), (0, 20));
        } else {
            assert_eq!((merged.merged, merged.skipped), (20, 0));
        }
    }
    let on_b = digests(&b).await;
    assert_eq!(on_b.epochs.len(), 1);
    assert_ne!(on_b.epochs[0].epoch, epoch_a);
    assert!(b
        .epochs("hits")
        .unwrap()
        .iter()
        .all(|e| e.epoch != epoch_a.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_before_the_batch_boundary_are_neither_compared_nor_merged() {
    use speedlayer_core::BatchBoundary;
    let ((_dir_a, a), (_dir_b, b)) = (replica(), replica());
    incr(&a, 0..20, HOUR_A).await;
    incr(&a, 0..20, HOUR_B).await;
    // `b` publishes a batch view covering HOUR_A: that epoch is the batch view's there.
    let boundary = BatchBoundary((HOUR_A + 3600) as u64);
    b.stage_begin("hits", boundary, 1).await.unwrap();
    b.stage_finish("hits", boundary, 1).await.unwrap();
    assert!(b.publish("hits", boundary, 1).await.unwrap());
    let floors = digests(&b).await.floors;
    assert_eq!(
        floors,
        vec![("hits".to_string(), Epoch(HOUR_B as u64 / 3600))]
    );
    let epoch_a = Epoch(HOUR_A as u64 / 3600);
    for epoch in digests(&a).await.epochs {
        let states = all_states(&a, "hits", epoch.epoch).await;
        let merged = b.merge_live("hits", states).await.unwrap();
        let expected = if epoch.epoch == epoch_a {
            (0, 20)
        } else {
            (20, 0)
        };
        assert_eq!(
            (merged.merged, merged.skipped),
            expected,
            "{:?}",
            epoch.epoch
        );
    }
    assert!(b
        .epochs("hits")
        .unwrap()
        .iter()
        .all(|e| e.epoch != epoch_a.0));
}
