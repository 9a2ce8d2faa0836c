//! The HTTP/JSON API's data path end to end: every value type written and read back,
//! idempotent updates and atomic batches, ranges over clustering keys, counter totals
//! across rows and epochs, and consistency levels on update, get and range.
//!
//! A real `reqwest` client against a real node listening on TCP, as the README's "HTTP
//! walk-through" describes it.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::http::{TestNode, TS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_writes_and_reads_back() {
    let node = TestNode::start().await;
    for (view, value_type) in [
        ("c", "counter"),
        ("g", "gcounter"),
        ("mx", "max"),
        ("mn", "min"),
        ("r", "register"),
        ("s", "set"),
        ("h", "hll"),
    ] {
        node.declare_ok(view, value_type).await;
    }

    // counter: increments and decrements, default `by` of 1.
    for body in [
        json!({ "key": "k", "clustering": "h1", "op": "incr", "by": 10, "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "decr", "by": 3, "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "incr", "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "decr", "ts": TS }),
        json!({ "key": "k", "clustering": "h1", "op": "decr", "by": 20, "ts": TS }),
    ] {
        let answer = node.update_ok("c", body).await;
        assert_eq!(answer["applied"], 1, "{answer}");
    }
    assert_eq!(node.value("c", "k", "h1").await, json!(-13));
    // Another clustering key of the same partition is another row.
    assert_eq!(node.value("c", "k", "h2").await, json!(0));
    // A row never written reads as the type's empty value.
    assert_eq!(node.value("c", "nobody", "").await, json!(0));

    // gcounter
    node.update_ok("g", json!({ "key": "k", "op": "incr", "by": 7, "ts": TS }))
        .await;
    node.update_ok("g", json!({ "key": "k", "op": "incr", "by": 5, "ts": TS }))
        .await;
    assert_eq!(node.value("g", "k", "").await, json!(12));

    // max and min: the extreme wins whatever the arrival order.
    assert_eq!(node.value("mx", "k", "").await, Value::Null);
    for v in [5, 42, -7, 41] {
        node.update_ok(
            "mx",
            json!({ "key": "k", "op": "max", "value": v, "ts": TS }),
        )
        .await;
        node.update_ok(
            "mn",
            json!({ "key": "k", "op": "min", "value": v, "ts": TS }),
        )
        .await;
    }
    assert_eq!(node.value("mx", "k", "").await, json!(42));
    assert_eq!(node.value("mn", "k", "").await, json!(-7));

    // register: last writer wins by event time, not by arrival.
    node.update_ok(
        "r",
        json!({ "key": "k", "op": "set", "value": "first", "ts": TS }),
    )
    .await;
    node.update_ok(
        "r",
        json!({ "key": "k", "op": "set", "value": "latest", "ts": TS + 2 }),
    )
    .await;
    node.update_ok(
        "r",
        json!({ "key": "k", "op": "set", "value": "late arrival", "ts": TS + 1 }),
    )
    .await;
    assert_eq!(node.value("r", "k", "").await, json!("latest"));

    // set: add and remove; members come back sorted.
    node.update_ok(
        "s",
        json!({ "key": "k", "op": "add", "members": ["pear", "apple", "fig"], "ts": TS }),
    )
    .await;
    node.update_ok(
        "s",
        json!({ "key": "k", "op": "add", "members": ["banana", "apple"], "ts": TS }),
    )
    .await;
    node.update_ok(
        "s",
        json!({ "key": "k", "op": "remove", "members": ["fig", "never-added"], "ts": TS }),
    )
    .await;
    assert_eq!(
        node.value("s", "k", "").await,
        json!(["apple", "banana", "pear"])
    );

    // hll: an approximate distinct count (p = 14: ~0.8 % standard error).
    let members: Vec<String> = (0..5000).map(|i| format!("visitor-{i}")).collect();
    for chunk in members.chunks(500) {
        node.update_ok(
            "h",
            json!({ "key": "k", "op": "pfadd", "members": chunk, "ts": TS }),
        )
        .await;
    }
    // Adding the same members again changes nothing.
    node.update_ok(
        "h",
        json!({ "key": "k", "op": "pfadd", "members": &members[..1000], "ts": TS }),
    )
    .await;
    let count = node.value("h", "k", "").await.as_i64().expect("integer");
    assert!(
        (4800..=5200).contains(&count),
        "hll count {count} is not within 4 % of 5000"
    );
    node.update_ok(
        "h",
        json!({ "key": "small", "op": "pfadd", "members": ["a", "b", "c", "a"], "ts": TS }),
    )
    .await;
    assert_eq!(node.value("h", "small", "").await, json!(3));

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_with_an_id_count_once_and_batches_apply_together() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    node.declare_ok("tags", "set").await;

    let update = json!({ "key": "k", "op": "incr", "by": 5, "ts": TS,
                         "id": { "writer": "w1", "seq": 1 } });
    let answer = node.update_ok("hits", update.clone()).await;
    assert_eq!(
        answer,
        json!({ "applied": 1, "duplicate": 0, "stale": 0, "late": 0 })
    );
    let answer = node.update_ok("hits", update.clone()).await;
    assert_eq!(
        answer,
        json!({ "applied": 0, "duplicate": 1, "stale": 0, "late": 0 })
    );
    assert_eq!(node.value("hits", "k", "").await, json!(5));

    // The same seq from another writer is another update.
    let answer = node
        .update_ok(
            "hits",
            json!({ "key": "k", "op": "incr", "by": 2, "ts": TS,
                    "id": { "writer": "w2", "seq": 1 } }),
        )
        .await;
    assert_eq!(answer["applied"], 1);
    assert_eq!(node.value("hits", "k", "").await, json!(7));

    // Out of order seqs of one writer each count once.
    for seq in [5, 3, 4, 3, 5] {
        node.update_ok(
            "hits",
            json!({ "key": "k", "op": "incr", "by": 100, "ts": TS,
                    "id": { "writer": "w3", "seq": seq } }),
        )
        .await;
    }
    assert_eq!(node.value("hits", "k", "").await, json!(307));

    // A batch of mixed updates: ids, anonymous, decrements, other rows, a duplicate
    // within the batch and one of an earlier request.
    let batch = json!([
        { "key": "k", "op": "incr", "by": 10, "ts": TS, "id": { "writer": "w4", "seq": 1 } },
        { "key": "k", "op": "incr", "by": 10, "ts": TS, "id": { "writer": "w4", "seq": 1 } },
        { "key": "k", "op": "decr", "by": 3, "ts": TS },
        { "key": "k", "clustering": "other", "op": "incr", "by": 4, "ts": TS },
        { "key": "k2", "op": "incr", "ts": TS },
        { "key": "k", "op": "incr", "by": 5, "ts": TS, "id": { "writer": "w1", "seq": 1 } },
    ]);
    let answer = node.update_ok("hits", batch.clone()).await;
    assert_eq!(
        answer,
        json!({ "applied": 4, "duplicate": 2, "stale": 0, "late": 0 })
    );
    assert_eq!(node.value("hits", "k", "").await, json!(314));
    assert_eq!(node.value("hits", "k", "other").await, json!(4));
    assert_eq!(node.value("hits", "k2", "").await, json!(1));

    // The whole batch again: every update with an id is a duplicate; the anonymous ones
    // are new updates and count again.
    let answer = node.update_ok("hits", batch).await;
    assert_eq!(
        answer,
        json!({ "applied": 3, "duplicate": 3, "stale": 0, "late": 0 })
    );
    assert_eq!(node.value("hits", "k", "").await, json!(311));
    assert_eq!(node.value("hits", "k", "other").await, json!(8));
    assert_eq!(node.value("hits", "k2", "").await, json!(2));

    // Set adds with an id are deduplicated too.
    let add = json!({ "key": "u", "op": "add", "members": ["x"], "ts": TS,
                      "id": { "writer": "w1", "seq": 1 } });
    assert_eq!(node.update_ok("tags", add.clone()).await["applied"], 1);
    assert_eq!(node.update_ok("tags", add).await["duplicate"], 1);
    assert_eq!(node.value("tags", "u", "").await, json!(["x"]));

    // An empty list is a valid batch of nothing.
    let answer = node.update_ok("hits", json!([])).await;
    assert_eq!(
        answer,
        json!({ "applied": 0, "duplicate": 0, "stale": 0, "late": 0 })
    );

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_returns_rows_in_clustering_order_within_inclusive_bounds() {
    let node = TestNode::start().await;
    node.declare_ok("views", "max").await;
    node.declare_ok("tags", "set").await;

    // Written out of order; another partition shares a prefix of the key.
    let rows = [
        ("h05", 5),
        ("h02", 2),
        ("h09", 9),
        ("h01", 1),
        ("h07", 7),
        ("h03", 3),
    ];
    let batch: Vec<Value> = rows
        .iter()
        .map(
            |(c, v)| json!({ "key": "/about", "clustering": c, "op": "max", "value": v, "ts": TS }),
        )
        .collect();
    node.update_ok("views", Value::Array(batch)).await;
    node.update_ok(
        "views",
        json!({ "key": "/about-us", "clustering": "h04", "op": "max", "value": 100, "ts": TS }),
    )
    .await;
    node.update_ok(
        "views",
        json!({ "key": "/abou", "clustering": "h04", "op": "max", "value": 200, "ts": TS }),
    )
    .await;

    let clusterings = |body: &Value| -> Vec<String> {
        body["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows in {body}"))
            .iter()
            .map(|r| r["clustering"].as_str().unwrap().to_string())
            .collect()
    };

    let (status, body) = node.range("views", &[("key", "/about")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        clusterings(&body),
        ["h01", "h02", "h03", "h05", "h07", "h09"]
    );
    assert_eq!(body["rows"][0]["value"], 1);
    assert_eq!(body["rows"][5]["value"], 9);
    assert_eq!(body["total"], 9);
    assert_eq!(body["truncated"], false);

    // Both bounds inclusive.
    let (status, body) = node
        .range(
            "views",
            &[("key", "/about"), ("from", "h02"), ("to", "h07")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(clusterings(&body), ["h02", "h03", "h05", "h07"]);
    let values: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [2, 3, 5, 7]);
    assert_eq!(body["total"], 7);

    // Bounds that fall between rows, and open bounds.
    let (_, body) = node
        .range(
            "views",
            &[("key", "/about"), ("from", "h04"), ("to", "h06")],
        )
        .await;
    assert_eq!(clusterings(&body), ["h05"]);
    assert_eq!(body["total"], 5);
    let (_, body) = node
        .range("views", &[("key", "/about"), ("from", "h07")])
        .await;
    assert_eq!(clusterings(&body), ["h07", "h09"]);
    let (_, body) = node
        .range("views", &[("key", "/about"), ("to", "h02")])
        .await;
    assert_eq!(clusterings(&body), ["h01", "h02"]);
    assert_eq!(body["total"], 2);

    // An empty range: no rows, the empty total.
    let (status, body) = node
        .range("views", &[("key", "/about"), ("from", "x"), ("to", "y")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(clusterings(&body), Vec::<String>::new());
    assert_eq!(body["total"], Value::Null);
    let (_, body) = node.range("views", &[("key", "/nothing")]).await;
    assert_eq!(clusterings(&body), Vec::<String>::new());

    // A limit truncates and says so.
    let (status, body) = node
        .range("views", &[("key", "/about"), ("limit", "2")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(clusterings(&body), ["h01", "h02"]);
    assert_eq!(body["truncated"], true);

    // A set's total is the union of the rows.
    node.update_ok(
        "tags",
        json!([
            { "key": "p", "clustering": "b", "op": "add", "members": ["y", "z"], "ts": TS },
            { "key": "p", "clustering": "a", "op": "add", "members": ["x", "y"], "ts": TS },
            { "key": "p", "clustering": "c", "op": "add", "members": ["w"], "ts": TS },
        ]),
    )
    .await;
    let (_, body) = node
        .range("tags", &[("key", "p"), ("from", "a"), ("to", "b")])
        .await;
    assert_eq!(clusterings(&body), ["a", "b"]);
    assert_eq!(body["rows"][0]["value"], json!(["x", "y"]));
    assert_eq!(body["total"], json!(["x", "y", "z"]));

    node.stop().await;
}

/// "pageviews of /about from hour 10 to hour 17": the total of a counter range is the sum
/// of its rows, each of which counted different events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_total_of_counter_rows_is_their_sum() {
    let node = TestNode::start().await;
    node.declare_ok("pageviews", "counter").await;
    node.update_ok(
        "pageviews",
        json!([
            { "key": "/about", "clustering": "h10", "op": "incr", "by": 5, "ts": TS },
            { "key": "/about", "clustering": "h11", "op": "incr", "by": 3, "ts": TS },
            { "key": "/about", "clustering": "h12", "op": "incr", "by": 2, "ts": TS },
        ]),
    )
    .await;
    let (status, body) = node
        .range(
            "pageviews",
            &[("key", "/about"), ("from", "h10"), ("to", "h12")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let values: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [5, 3, 2], "{body}");
    assert_eq!(body["total"], 10, "total of rows 5 + 3 + 2: {body}");
    node.stop().await;
}

/// One row written in two epochs (events an hour apart under the same key) reads as the
/// sum of both epochs' increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_row_spanning_two_epochs_reads_as_the_sum() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 5, "ts": TS }),
    )
    .await;
    node.update_ok(
        "hits",
        json!({ "key": "k", "op": "incr", "by": 3, "ts": TS + 3600 }),
    )
    .await;
    let (_, epochs) = node.get_path("/v1/views/hits/epochs").await;
    assert_eq!(epochs["epochs"].as_array().unwrap().len(), 2, "{epochs}");
    assert_eq!(node.value("hits", "k", "").await, json!(8));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_levels_are_accepted_on_update_get_and_range() {
    let node = TestNode::start().await;
    node.declare_ok("hits", "counter").await;
    for (n, level) in ["one", "quorum", "all"].into_iter().enumerate() {
        let (status, body) = node
            .update_raw(
                "hits",
                &format!("?consistency={level}"),
                json!({ "key": "k", "clustering": format!("c{n}"), "op": "incr", "by": 1, "ts": TS })
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "update at {level}: {body}");
        let (status, body) = node
            .update_raw(
                "hits",
                &format!("?consistency={level}&quorum=strict&mode=sync"),
                json!({ "key": "k", "clustering": format!("c{n}"), "op": "incr", "by": 1, "ts": TS })
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "strict update at {level}: {body}");
        let (status, body) = node
            .update_raw(
                "hits",
                &format!("?consistency={level}&quorum=sloppy"),
                json!({ "key": "k", "clustering": format!("c{n}"), "op": "incr", "by": 1, "ts": TS })
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "sloppy update at {level}: {body}");
    }
    for level in ["one", "quorum", "all"] {
        let (status, body) = node
            .get(
                "hits",
                &[("key", "k"), ("clustering", "c1"), ("consistency", level)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "get at {level}: {body}");
        assert_eq!(body["value"], 3);
        let (status, body) = node
            .range("hits", &[("key", "k"), ("consistency", level)])
            .await;
        assert_eq!(status, StatusCode::OK, "range at {level}: {body}");
        assert_eq!(body["rows"].as_array().unwrap().len(), 3, "{body}");
        for row in body["rows"].as_array().unwrap() {
            assert_eq!(row["value"], 3, "{body}");
        }
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_updates_past_the_i64_range_are_refused_not_saturated() {
    let node = TestNode::start().await;
    node.declare_ok("c", "counter").await;
    let incr = |by: i64| json!({ "key": "k", "op": "incr", "by": by, "ts": TS });
    let value = || async {
        let (status, answer) = node.get("c", &[("key", "k")]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["value"].clone()
    };
    node.update_ok("c", incr(i64::MAX)).await;
    for by in [1, i64::MAX] {
        let (status, answer) = node.update("c", &incr(by)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["applied"], 0, "{answer}");
        assert_eq!(answer["error"], "updates_refused", "{answer}");
        assert_eq!(
            answer["failed"][0]["error"], "increment or decrement would overflow",
            "{answer}"
        );
        assert_eq!(value().await, json!(i64::MAX));
    }
    // Downwards: MAX + MIN = -1, then MIN once more would leave the range.
    node.update_ok("c", incr(i64::MIN)).await;
    assert_eq!(value().await, json!(-1));
    let (status, answer) = node
        .update(
            "c",
            &json!({ "key": "k", "op": "decr", "by": i64::MAX, "ts": TS }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(value().await, json!(i64::MIN));
    let (status, answer) = node
        .update("c", &json!({ "key": "k", "op": "decr", "by": 1, "ts": TS }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(value().await, json!(i64::MIN));
}
