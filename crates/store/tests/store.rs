//! Storage-layer behaviour: concurrency exactness, epochs, recovery, range order.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prometheus_client::registry::Registry;
use speedlayer_core::{Epoch, Key, Op, Outcome, Reading, UpdateId, Value, ValueType};
use speedlayer_store::{Store, StoreConfig, StoreError, Update, ViewSpec};

/// Applies and keeps only the outcomes.
async fn apply(
    store: &Store,
    view: &str,
    updates: Vec<Update>,
) -> Result<Vec<Result<Outcome, speedlayer_core::OpError>>, StoreError> {
    let results = store.apply(view, updates).await?;
    Ok(results.into_iter().map(|r| r.map(|a| a.outcome)).collect())
}

fn open(dir: &std::path::Path) -> Store {
    let mut registry = Registry::default();
    Store::open(StoreConfig::new(dir), &mut registry).expect("open store")
}

fn key(partition: &str, clustering: &str) -> Key {
    Key::new(
        partition.as_bytes().to_vec(),
        clustering.as_bytes().to_vec(),
    )
    .expect("key")
}

fn incr(partition: &str, clustering: &str, by: i64, ts_secs: Option<i64>) -> Update {
    Update {
        key: key(partition, clustering),
        op: Op::Incr(by),
        ts_us: ts_secs.map(|s| s * 1_000_000),
        id: None,
    }
}

/// A counter reading; a key no epoch holds counts 0.
fn count(reading: &Option<Reading>) -> i64 {
    reading.as_ref().map_or(0, total)
}

fn total(reading: &Reading) -> i64 {
    match reading {
        Reading::Count { total, .. } => *total,
        other => panic!("not a counter: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_key_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .declare_view("hits", ViewSpec::new(ValueType::Counter))
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                let results = apply(&store, "hits", vec![incr("hot", "", 1, None)])
                    .await
                    .unwrap();
                assert_eq!(results[0], Ok(Outcome::Applied));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        count(&store.get("hits", &key("hot", "")).await.unwrap()),
        160_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .declare_view("hits", ViewSpec::new(ValueType::Counter))
            .unwrap();
        store
            .declare_view("tags", ViewSpec::new(ValueType::Set))
            .unwrap();
        for i in 0..100 {
            apply(
                &store,
                "hits",
                vec![incr(&format!("k{}", i % 7), "", i, Some(1_732_450_000))],
            )
            .await
            .unwrap();
        }
        apply(
            &store,
            "tags",
            vec![Update {
                key: key("post-1", ""),
                op: Op::Add(vec![b"rust".to_vec(), b"crdt".to_vec()]),
                ts_us: None,
                id: None,
            }],
        )
        .await
        .unwrap();
    }
    let store = open(dir.path());
    let expected: i64 = (0..100).filter(|i| i % 7 == 3).sum();
    assert_eq!(
        count(&store.get("hits", &key("k3", "")).await.unwrap()),
        expected
    );
    match store.get("tags", &key("post-1", "")).await.unwrap() {
        Some(Reading::State(Value::Set(set))) => {
            assert_eq!(set.members(), vec![&b"crdt"[..], &b"rust"[..]])
        }
        other => panic!("not a set: {other:?}"),
    }
    assert_eq!(store.views().len(), 2);
    // The reopened store keeps counting on top of what it recovered.
    apply(&store, "hits", vec![incr("k3", "", 1, Some(1_732_450_000))])
        .await
        .unwrap();
    assert_eq!(
        count(&store.get("hits", &key("k3", "")).await.unwrap()),
        expected + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_ids_count_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let update = |seq| Update {
        key: key("page", ""),
        op: Op::Incr(5),
        ts_us: Some(1_732_450_000_000_000),
        id: Some(UpdateId {
            writer: "w1".into(),
            seq,
        }),
    };
    {
        let store = open(dir.path());
        store
            .declare_view("hits", ViewSpec::new(ValueType::Counter))
            .unwrap();
        let r = apply(&store, "hits", vec![update(1), update(2), update(1)])
            .await
            .unwrap();
        assert_eq!(
            r,
            vec![
                Ok(Outcome::Applied),
                Ok(Outcome::Applied),
                Ok(Outcome::Duplicate)
            ]
        );
    }
    let store = open(dir.path());
    let r = apply(&store, "hits", vec![update(2), update(3)])
        .await
        .unwrap();
    assert_eq!(r, vec![Ok(Outcome::Duplicate), Ok(Outcome::Applied)]);
    assert_eq!(
        count(&store.get("hits", &key("page", "")).await.unwrap()),
        15
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_epoch_removes_only_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .declare_view("hits", ViewSpec::new(ValueType::Counter))
        .unwrap();
    let hour_a = 1_732_446_000; // start of an hour
    let hour_b = hour_a + 3600;
    let mut updates = Vec::new();
    for i in 0..1000 {
        updates.push(incr(&format!("k{i}"), "", 1, Some(hour_a + 5)));
    }
    updates.push(incr("k0", "", 10, Some(hour_b + 5)));
    updates.push(incr("only-b", "", 7, Some(hour_b + 5)));
    apply(&store, "hits", updates).await.unwrap();
    let epochs = store.epochs("hits").unwrap();
    assert_eq!(epochs.len(), 2);
    assert_eq!(count(&store.get("hits", &key("k0", "")).await.unwrap()), 11);

    let epoch_a = Epoch::containing(hour_a * 1_000_000, 3600).unwrap();
    assert!(store.drop_epochs("hits", &[epoch_a]).await.unwrap());
    assert!(!store.drop_epochs("hits", &[epoch_a]).await.unwrap());
    assert_eq!(count(&store.get("hits", &key("k0", "")).await.unwrap()), 10);
    assert_eq!(
        count(&store.get("hits", &key("k999", "")).await.unwrap()),
        0
    );
    assert_eq!(
        count(&store.get("hits", &key("only-b", "")).await.unwrap()),
        7
    );
    assert_eq!(store.epochs("hits").unwrap().len(), 1);
    assert_eq!(store.dropped_indexes("hits"), vec![epoch_a.0]);

    // Nothing brings the dropped epoch back: a write into it is refused, and so is a
    // replica's state for it (replication, a hint, read repair).
    let refused = apply(&store, "hits", vec![incr("k5", "", 2, Some(hour_a + 9))])
        .await
        .unwrap();
    assert_eq!(
        refused,
        vec![Err(speedlayer_core::OpError::EpochDropped {
            epoch: epoch_a.0
        })]
    );
    let mut state = speedlayer_core::Value::new(ValueType::Counter);
    state
        .apply(
            &speedlayer_core::Op::Incr(4),
            &speedlayer_core::ApplyCtx {
                node: "peer",
                id: None,
                ts_us: hour_a * 1_000_000,
                unique: 1,
            },
        )
        .unwrap();
    let merged = store
        .merge("hits", vec![(epoch_a, key("k5", ""), state)])
        .await
        .unwrap();
    assert!(matches!(
        merged[0],
        Err(speedlayer_core::OpError::EpochDropped { .. })
    ));
    assert_eq!(count(&store.get("hits", &key("k5", "")).await.unwrap()), 0);
    assert_eq!(store.epochs("hits").unwrap().len(), 1);
    drop(store);
    // And the drop is durable: still refused after a restart.
    let store = open(dir.path());
    assert_eq!(count(&store.get("hits", &key("k6", "")).await.unwrap()), 0);
    assert_eq!(count(&store.get("hits", &key("k0", "")).await.unwrap()), 10);
    assert_eq!(store.dropped_indexes("hits"), vec![epoch_a.0]);
    let refused = apply(&store, "hits", vec![incr("k5", "", 2, Some(hour_a + 9))])
        .await
        .unwrap();
    assert!(matches!(
        refused[0],
        Err(speedlayer_core::OpError::EpochDropped { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_merge_epochs_in_clustering_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .declare_view("pv", ViewSpec::new(ValueType::Counter))
        .unwrap();
    let base = 1_732_446_000;
    let mut updates = Vec::new();
    for hour in (0..24).rev() {
        let clustering = format!("h{hour:02}");
        // Each row is written in two epochs, so the range must merge them.
        updates.push(incr("/about", &clustering, hour + 1, Some(base)));
        updates.push(incr("/about", &clustering, 100, Some(base + 7200)));
    }
    updates.push(incr("/aboutx", "h05", 1000, Some(base)));
    apply(&store, "pv", updates).await.unwrap();
    let rows = store
        .range(
            "pv",
            b"/about".to_vec(),
            Some(b"h10".to_vec()),
            Some(b"h17".to_vec()),
            1000,
        )
        .await
        .unwrap();
    let clusterings: Vec<_> = rows
        .rows
        .iter()
        .map(|r| String::from_utf8(r.clustering.clone()).unwrap())
        .collect();
    assert_eq!(
        clusterings,
        (10..=17).map(|h| format!("h{h:02}")).collect::<Vec<_>>()
    );
    let values: Vec<i64> = rows.rows.iter().map(|r| total(&r.value)).collect();
    assert_eq!(values, (10..=17).map(|h| h + 1 + 100).collect::<Vec<_>>());
    assert_eq!(count(&rows.total), values.iter().sum::<i64>());
    assert!(!rows.truncated);

    let all = store
        .range("pv", b"/about".to_vec(), None, None, 5)
        .await
        .unwrap();
    assert_eq!(all.rows.len(), 5);
    assert!(all.truncated);
    assert_eq!(all.rows[0].clustering, b"h00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batches_apply_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .declare_view("g", ViewSpec::new(ValueType::Gcounter))
        .unwrap();
    let err = apply(
        &store,
        "g",
        vec![incr("a", "", 1, None), incr("a", "", -1, None)],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Request(speedlayer_api::Error::WrongOp { .. })
        ),
        "{err}"
    );
    let err = apply(
        &store,
        "g",
        vec![incr("a", "", 1, None), incr("a", "", 1, Some(-3))],
    )
    .await
    .unwrap_err();
    assert!(err.is_client_error(), "{err}");
    let err = apply(&store, "nope", vec![incr("a", "", 1, None)])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Request(speedlayer_api::Error::UnknownView(_))
    ));
    assert_eq!(count(&store.get("g", &key("a", "")).await.unwrap()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_views_fix_each_keys_type_and_delete_removes_keys() {
    use speedlayer_core::OpError;
    use speedlayer_store::ViewType;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let spec = ViewSpec {
        value_type: ViewType::Any,
        epoch_secs: 1_000_000_000_000,
        mapping: None,
    };
    store.declare_view("redis", spec).unwrap();
    let set = |k: &str, v: &str| Update {
        key: key(k, ""),
        op: Op::Set(v.as_bytes().to_vec()),
        ts_us: None,
        id: None,
    };
    let r = apply(
        &store,
        "redis",
        vec![set("name", "ada"), incr("hits", "", 2, None)],
    )
    .await
    .unwrap();
    assert_eq!(r, vec![Ok(Outcome::Applied), Ok(Outcome::Applied)]);
    // A write of another type to an existing key is refused, and changes nothing.
    let r = apply(&store, "redis", vec![incr("name", "", 1, None)])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(OpError::WrongOp { .. })), "{r:?}");
    match store.get("redis", &key("name", "")).await.unwrap() {
        Some(Reading::State(Value::Register(reg))) => assert_eq!(reg.get(), Some(&b"ada"[..])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count(&store.get("redis", &key("hits", "")).await.unwrap()),
        2
    );
    assert!(store
        .get("redis", &key("never", ""))
        .await
        .unwrap()
        .is_none());

    let delete = |k: &str| Update {
        key: key(k, ""),
        op: Op::Delete,
        ts_us: None,
        id: None,
    };
    let existed: Vec<i64> = store
        .apply_reporting("redis", vec![delete("name"), delete("never")])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().effect)
        .collect();
    assert_eq!(existed, vec![1, 0]);
    assert!(store
        .get("redis", &key("name", ""))
        .await
        .unwrap()
        .is_none());
    // After a delete the key may take another type.
    let r = apply(&store, "redis", vec![incr("name", "", 5, None)])
        .await
        .unwrap();
    assert_eq!(r[0], Ok(Outcome::Applied));
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        count(&store.get("redis", &key("name", "")).await.unwrap()),
        5
    );
    assert_eq!(
        count(&store.get("redis", &key("hits", "")).await.unwrap()),
        2
    );
}

/// A register written with a stamp from a clock an hour ahead (a skewed replica's write,
/// merged here) does not hide a later write without an event time: the later write is
/// stamped after what this replica holds. The stamp is logged, so a restart that replays
/// the log answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_register_write_wins_over_a_stamp_from_a_clock_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let hour_ahead_us = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64)
        + 3_600_000_000;
    let set = |value: &str, ts_us: Option<i64>| Update {
        key: key("greeting", ""),
        op: Op::Set(value.as_bytes().to_vec()),
        ts_us,
        id: None,
    };
    let read = |store: Store| async move {
        match store.get("reg", &key("greeting", "")).await.unwrap() {
            Some(Reading::State(Value::Register(r))) => (
                String::from_utf8(r.get().unwrap().to_vec()).unwrap(),
                r.timestamp_us().unwrap(),
            ),
            other => panic!("{other:?}"),
        }
    };
    {
        let store = open(dir.path());
        let mut spec = ViewSpec::new(ValueType::Register);
        spec.epoch_secs = 1_000_000_000;
        store.declare_view("reg", spec).unwrap();
        apply(
            &store,
            "reg",
            vec![set("from the future", Some(hour_ahead_us))],
        )
        .await
        .unwrap();
        apply(&store, "reg", vec![set("later", None)])
            .await
            .unwrap();
        let (value, stamp) = read(store.clone()).await;
        assert_eq!(value, "later");
        assert!(stamp > hour_ahead_us, "{stamp} vs {hour_ahead_us}");
        // An explicit event time still decides by event time: an older event loses.
        apply(
            &store,
            "reg",
            vec![set("old event", Some(1_732_450_000_000_000))],
        )
        .await
        .unwrap();
        assert_eq!(read(store.clone()).await.0, "later");
    }
    let (value, _) = read(open(dir.path())).await;
    assert_eq!(value, "later", "the replay stamps as the first apply did");
}

/// The keys of each live epoch as `epochs()` reports them.
fn keys_per_epoch(store: &Store, view: &str) -> Vec<u64> {
    store
        .epochs(view)
        .unwrap()
        .iter()
        .map(|e| e.approx_keys)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_counts_are_exact_through_overwrites_deletes_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ViewSpec::new(ValueType::Counter);
    spec.epoch_secs = 3600;
    let (hour_a, hour_b) = (1_732_450_000, 1_732_450_000 + 3600);
    {
        let store = open(dir.path());
        store.declare_view("hits", spec.clone()).unwrap();
        // 1,000 keys in hour A, 300 in hour B, each written 5 times over several
        // checkpoints (every version of a key stays in the LSM tree for a while).
        for round in 0..5 {
            let mut updates: Vec<Update> = (0..1000)
                .map(|i| incr(&format!("k{i}"), "", 1, Some(hour_a)))
                .collect();
            updates.extend((0..300).map(|i| incr(&format!("k{i}"), "", 1, Some(hour_b))));
            apply(&store, "hits", updates).await.unwrap();
            store.checkpoint().await.unwrap();
            assert_eq!(
                keys_per_epoch(&store, "hits"),
                vec![1000, 300],
                "round {round}"
            );
        }
        // 100 keys of hour A deleted, 10 deleted twice, 5 never written deleted.
        let deletes = (0..100)
            .chain(0..10)
            .map(|i| format!("k{i}"))
            .chain((0..5).map(|i| format!("absent{i}")))
            .map(|k| Update {
                key: key(&k, ""),
                op: Op::Delete,
                ts_us: Some(hour_a * 1_000_000),
                id: None,
            })
            .collect();
        apply(&store, "hits", deletes).await.unwrap();
        store.checkpoint().await.unwrap();
        assert_eq!(keys_per_epoch(&store, "hits"), vec![900, 300]);
        // Deleted keys written again count again; new keys count.
        let updates = (50..100)
            .chain(1000..1020)
            .map(|i| incr(&format!("k{i}"), "", 1, Some(hour_a)))
            .collect();
        apply(&store, "hits", updates).await.unwrap();
    }
    let store = open(dir.path());
    assert_eq!(keys_per_epoch(&store, "hits"), vec![970, 300]);
}

/// Pages through every key of `view` with `limit` placement hashes per page.
async fn scan_all(store: &Store, view: &str, limit: usize) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut from = 0u64;
    store.checkpoint().await.unwrap();
    loop {
        let page = store.scan_keys(view, from, u64::MAX, limit).await.unwrap();
        assert!(page.reached >= from, "a page went backwards");
        keys.extend(page.keys.into_iter().map(|(key, value_type)| {
            assert_eq!(value_type, ValueType::Counter);
            key
        }));
        match page.reached.checked_add(1) {
            Some(next) => from = next,
            None => return keys,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_listings_page_through_every_epoch_listing_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .declare_view("pv", ViewSpec::new(ValueType::Counter))
        .unwrap();
    let base = 1_732_446_000;
    // Keys in one epoch, in the other, and in both (each page must stop at the smaller
    // reach of the two epochs, or a key of the farther one would be listed twice);
    // partitions with several rows, which share a placement hash.
    let mut updates = Vec::new();
    for i in 0..120 {
        let partition = format!("p{i}");
        if i % 3 != 1 {
            updates.push(incr(&partition, "", 1, Some(base)));
        }
        if i % 3 != 0 {
            updates.push(incr(&partition, "", 1, Some(base + 7200)));
        }
        if i % 10 == 0 {
            updates.push(incr(&partition, "a", 1, Some(base)));
            updates.push(incr(&partition, "b", 1, Some(base + 7200)));
        }
    }
    apply(&store, "pv", updates).await.unwrap();
    // A deleted key is not listed (p1 lives in the second epoch only).
    let delete = Update {
        key: key("p1", ""),
        op: Op::Delete,
        ts_us: Some((base + 7200) * 1_000_000),
        id: None,
    };
    apply(&store, "pv", vec![delete]).await.unwrap();
    let mut expected: Vec<Key> = (0..120)
        .filter(|i| *i != 1)
        .map(|i| key(&format!("p{i}"), ""))
        .chain((0..120).step_by(10).flat_map(|i| {
            let p = format!("p{i}");
            [key(&p, "a"), key(&p, "b")]
        }))
        .collect();
    expected.sort();
    for limit in [1, 3, 7, 1000] {
        let mut listed = scan_all(&store, "pv", limit).await;
        let pages_len = listed.len();
        listed.sort();
        listed.dedup();
        assert_eq!(
            listed.len(),
            pages_len,
            "a key listed twice with limit {limit}"
        );
        assert_eq!(listed, expected, "limit {limit}");
    }
}
