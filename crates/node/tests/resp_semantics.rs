//! The Redis-protocol front end's semantics through redis-rs against a real node: WRONGTYPE
//! on implicit and declared keys, pipelines answering in order with running totals (also
//! over several epochs of a declared view), RESP3 reply types, AUTH with `requirepass`, and
//! increments past the i64 range.
//!
//! Keys: `view:partition[:clustering]` addresses a declared view; any other key lives in
//! the implicit `redis` view and takes the type of its first write.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redis::Value;
use reqwest::StatusCode;
use serde_json::json;
use support::resp::{
    bulk, cmd, cmd_err, connect_url, int, members, ok, set_of, text, TestNode, WRONGTYPE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_on_implicit_and_declared_keys() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    let mut con = node.connect(false).await;

    // A key made by INCR is a counter.
    assert_eq!(int(&mut con, &["INCR", "c"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["SADD", "c", "x"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SREM", "c", "x"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFADD", "c", "x"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SET", "c", "v"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SMEMBERS", "c"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SCARD", "c"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFCOUNT", "c"]).await, WRONGTYPE);
    // ... and it is unchanged by the refused commands.
    assert_eq!(int(&mut con, &["INCR", "c"]).await, 2);

    // A key made by SADD is a set.
    assert_eq!(int(&mut con, &["SADD", "s", "m"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["INCR", "s"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["INCRBY", "s", "5"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["DECR", "s"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["GET", "s"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SET", "s", "v"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFADD", "s", "m"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFMERGE", "s", "c"]).await, WRONGTYPE);
    assert_eq!(members(&mut con, &["SMEMBERS", "s"]).await, set_of(&["m"]));

    // A key made by SET is a string.
    ok(&mut con, &["SET", "str", "text"]).await;
    assert_eq!(cmd_err(&mut con, &["SADD", "str", "x"]).await, WRONGTYPE);
    assert_eq!(
        cmd_err(&mut con, &["SISMEMBER", "str", "x"]).await,
        WRONGTYPE
    );

    // A key made by PFADD is a HyperLogLog.
    assert_eq!(int(&mut con, &["PFADD", "hll", "a"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["INCR", "hll"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["SADD", "hll", "a"]).await, WRONGTYPE);
    assert_eq!(cmd_err(&mut con, &["PFCOUNT", "hll", "s"]).await, WRONGTYPE);
    assert_eq!(int(&mut con, &["PFCOUNT", "hll"]).await, 1);

    // A declared counter view: every key under it is a counter, written or not.
    assert_eq!(
        cmd_err(&mut con, &["SADD", "hits:page", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["PFADD", "hits:page", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["SET", "hits:page", "1"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["SREM", "hits:page", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(int(&mut con, &["INCR", "hits:page"]).await, 1);
    assert_eq!(int(&mut con, &["INCRBY", "hits:page", "9"]).await, 10);
    assert_eq!(
        cmd_err(&mut con, &["SMEMBERS", "hits:page"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["PFCOUNT", "hits:page"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["SADD", "hits:page:sub", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        bulk(&mut con, &["GET", "hits:page"]).await.as_deref(),
        Some("10")
    );
    // A key whose prefix names no declared view is an ordinary key.
    assert_eq!(int(&mut con, &["SADD", "nosuchview:page", "x"]).await, 1);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_answer_in_order_with_running_totals() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // 16 INCRs over 4 keys.
    let mut pipe = redis::pipe();
    for i in 0..16 {
        pipe.cmd("INCR").arg(format!("p16:{}", i % 4));
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("pipeline of 16");
    let expected: Vec<i64> = (0..16).map(|i| i / 4 + 1).collect();
    assert_eq!(replies, expected);
    for k in 0..4 {
        assert_eq!(
            bulk(&mut con, &["GET", &format!("p16:{k}")])
                .await
                .as_deref(),
            Some("4")
        );
    }

    // 1,000 INCR/INCRBY/DECR over 7 keys, replies checked against a model.
    let mut pipe = redis::pipe();
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected = Vec::new();
    for i in 0..1000i64 {
        let key = format!("p1000:{}", (i * 7919) % 7);
        let total = model.entry(key.clone()).or_insert(0);
        match i % 5 {
            0..=2 => {
                pipe.cmd("INCR").arg(&key);
                *total += 1;
            }
            3 => {
                pipe.cmd("INCRBY").arg(&key).arg(i);
                *total += i;
            }
            _ => {
                pipe.cmd("DECR").arg(&key);
                *total -= 1;
            }
        }
        expected.push(*total);
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("pipeline of 1000");
    assert_eq!(replies.len(), 1000);
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i} of the 1,000-command pipeline");
    }
    for (key, total) in &model {
        assert_eq!(
            bulk(&mut con, &["GET", key]).await,
            Some(total.to_string()),
            "{key}"
        );
    }

    // Reads see the writes before them in the same pipeline, and not those after.
    let mut pipe = redis::pipe();
    pipe.cmd("INCR").arg("mix:c");
    pipe.cmd("GET").arg("mix:c");
    pipe.cmd("SADD").arg("mix:s").arg("a").arg("b");
    pipe.cmd("SCARD").arg("mix:s");
    pipe.cmd("INCRBY").arg("mix:c").arg(10);
    pipe.cmd("SADD").arg("mix:s").arg("b").arg("c");
    pipe.cmd("GET").arg("mix:c");
    pipe.cmd("SMEMBERS").arg("mix:s");
    pipe.cmd("HINCRBY").arg("mix:h").arg("f").arg(2);
    pipe.cmd("HINCRBY").arg("mix:h").arg("f").arg(3);
    pipe.cmd("HGET").arg("mix:h").arg("f");
    pipe.cmd("PFADD").arg("mix:p").arg("x");
    pipe.cmd("PFADD").arg("mix:p").arg("x");
    pipe.cmd("PFCOUNT").arg("mix:p");
    let replies: Vec<Value> = pipe.query_async(&mut con).await.expect("mixed pipeline");
    assert_eq!(
        replies,
        vec![
            Value::Int(1),
            Value::BulkString(b"1".to_vec()),
            Value::Int(2),
            Value::Int(2),
            Value::Int(11),
            Value::Int(1),
            Value::BulkString(b"11".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"c".to_vec()),
            ]),
            Value::Int(2),
            Value::Int(5),
            Value::BulkString(b"5".to_vec()),
            Value::Int(1),
            Value::Int(0),
            Value::Int(1),
        ]
    );

    // Several connections pipelining INCRs on the same keys at once lose nothing.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut con = node.connect(false).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let mut pipe = redis::pipe();
                for i in 0..200 {
                    pipe.cmd("INCR").arg(format!("shared:{}", i % 3)).ignore();
                }
                pipe.exec_async(&mut con)
                    .await
                    .expect("concurrent pipeline");
            }
        }));
    }
    for task in tasks {
        task.await.expect("pipelining task");
    }
    let totals: Vec<Option<i64>> = redis::cmd("MGET")
        .arg("shared:0")
        .arg("shared:1")
        .arg("shared:2")
        .query_async(&mut con)
        .await
        .expect("MGET");
    // 4 connections x 5 pipelines x 200 INCRs over 3 keys (67, 67, 66 per pipeline).
    assert_eq!(
        totals,
        vec![Some(4 * 5 * 67), Some(4 * 5 * 67), Some(4 * 5 * 66)]
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_maps_sets_and_verbatim_strings() {
    let node = TestNode::start().await;
    let mut con = node.connect(true).await;

    assert_eq!(int(&mut con, &["HINCRBY", "h", "a", "1"]).await, 1);
    assert_eq!(int(&mut con, &["HINCRBY", "h", "b", "2"]).await, 2);
    match cmd(&mut con, &["HGETALL", "h"]).await {
        Value::Map(pairs) => {
            let got: BTreeMap<String, String> =
                pairs.iter().map(|(k, v)| (text(k), text(v))).collect();
            let want: BTreeMap<String, String> = [("a", "1"), ("b", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want);
        }
        other => panic!("HGETALL in RESP3: expected a map, got {other:?}"),
    }
    match cmd(&mut con, &["HGETALL", "missing"]).await {
        Value::Map(pairs) => assert!(pairs.is_empty()),
        other => panic!("HGETALL of a missing key in RESP3: {other:?}"),
    }
    // The typed conversion works too.
    let typed: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("h")
        .query_async(&mut con)
        .await
        .expect("HGETALL as a HashMap");
    assert_eq!(typed.get("b"), Some(&2));

    assert_eq!(int(&mut con, &["SADD", "s", "x", "y", "z"]).await, 3);
    match cmd(&mut con, &["SMEMBERS", "s"]).await {
        Value::Set(items) => {
            let got: BTreeSet<String> = items.iter().map(text).collect();
            assert_eq!(got, set_of(&["x", "y", "z"]));
        }
        other => panic!("SMEMBERS in RESP3: expected a set, got {other:?}"),
    }
    let typed: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg("s")
        .query_async(&mut con)
        .await
        .expect("SMEMBERS as a set");
    assert_eq!(typed, set_of(&["x", "y", "z"]));

    // Null is RESP3's `_`, which redis-rs decodes as Nil.
    assert_eq!(cmd(&mut con, &["GET", "missing"]).await, Value::Nil);
    // INFO is a verbatim string in RESP3.
    match cmd(&mut con, &["INFO"]).await {
        Value::VerbatimString { text, .. } => {
            assert!(text.contains("# Server"), "{text}");
            assert!(text.contains("# Keyspace"), "{text}");
        }
        other => panic!("INFO in RESP3: expected a verbatim string, got {other:?}"),
    }
    // HELLO 3 answers its description as a map with proto 3.
    match cmd(&mut con, &["HELLO", "3"]).await {
        Value::Map(pairs) => {
            let proto = pairs
                .iter()
                .find(|(k, _)| text(k) == "proto")
                .map(|(_, v)| v.clone());
            assert_eq!(proto, Some(Value::Int(3)), "{pairs:?}");
        }
        other => panic!("HELLO 3: expected a map, got {other:?}"),
    }
    // Errors are still errors.
    assert_eq!(cmd_err(&mut con, &["INCR", "s"]).await, WRONGTYPE);
    // And pipelines still answer in order.
    let mut pipe = redis::pipe();
    for _ in 0..16 {
        pipe.cmd("INCR").arg("r3");
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("RESP3 pipeline");
    assert_eq!(replies, (1..=16).collect::<Vec<_>>());
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_gates_commands_until_auth() {
    let node = TestNode::start_in(tempfile::tempdir().expect("tempdir"), Some("pw")).await;
    let addr = node.node().resp_addr;
    let mut con = connect_url(&format!("redis://{addr}/")).await;

    assert_eq!(
        cmd_err(&mut con, &["GET", "k"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        cmd_err(&mut con, &["INCR", "k"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        cmd_err(&mut con, &["SELECT", "0"]).await,
        "NOAUTH Authentication required."
    );
    assert_eq!(
        cmd(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    let wrong = cmd_err(&mut con, &["AUTH", "not-the-password"]).await;
    assert!(wrong.starts_with("WRONGPASS"), "AUTH wrong: {wrong}");
    let wrong_user = cmd_err(&mut con, &["AUTH", "admin", "pw"]).await;
    assert!(
        wrong_user.starts_with("WRONGPASS"),
        "AUTH admin pw: {wrong_user}"
    );
    // Still locked after failed attempts.
    assert_eq!(
        cmd_err(&mut con, &["GET", "k"]).await,
        "NOAUTH Authentication required."
    );
    ok(&mut con, &["AUTH", "pw"]).await;
    assert_eq!(int(&mut con, &["INCR", "k"]).await, 1);
    assert_eq!(bulk(&mut con, &["GET", "k"]).await.as_deref(), Some("1"));
    // The refused INCR before AUTH did nothing.
    assert_eq!(int(&mut con, &["INCR", "k"]).await, 2);

    // AUTH default <password>, as Redis 6+ clients send it.
    let mut second = connect_url(&format!("redis://{addr}/")).await;
    ok(&mut second, &["AUTH", "default", "pw"]).await;
    assert_eq!(bulk(&mut second, &["GET", "k"]).await.as_deref(), Some("2"));

    // A password in the URL: redis-rs sends AUTH (RESP2) or HELLO 3 AUTH (RESP3) itself.
    let mut url2 = connect_url(&format!("redis://:pw@{addr}/")).await;
    assert_eq!(int(&mut url2, &["INCR", "k"]).await, 3);
    let mut url3 = connect_url(&format!("redis://:pw@{addr}/?protocol=resp3")).await;
    assert_eq!(int(&mut url3, &["INCR", "k"]).await, 4);
    assert_eq!(int(&mut url3, &["SADD", "s", "a"]).await, 1);
    assert!(matches!(
        cmd(&mut url3, &["SMEMBERS", "s"]).await,
        Value::Set(_)
    ));
    // A wrong password in the URL fails the connection.
    let client = redis::Client::open(format!("redis://:nope@{addr}/")).unwrap();
    assert!(
        client.get_multiplexed_async_connection().await.is_err(),
        "connecting with a wrong password must fail"
    );
    // HELLO before AUTH is refused unless it authenticates.
    let mut fresh = connect_url(&format!("redis://{addr}/")).await;
    let hello = cmd_err(&mut fresh, &["HELLO", "3"]).await;
    assert!(hello.starts_with("NOAUTH"), "HELLO 3 before AUTH: {hello}");
    drop((con, second, url2, url3, fresh));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_incrs_on_declared_views_answer_running_totals_over_epochs() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    // An earlier epoch of the same row, written over HTTP with an old event time.
    let response = node
        .http
        .post(node.url("/v1/views/hits/update"))
        .json(&json!({"key": "p", "op": "incr", "by": 100, "ts": 1_732_450_000}))
        .send()
        .await
        .expect("HTTP update");
    assert_eq!(response.status(), StatusCode::OK);
    let mut con = node.connect(false).await;
    let replies: Vec<i64> = redis::pipe()
        .cmd("INCR")
        .arg("hits:p")
        .cmd("INCR")
        .arg("hits:p")
        .cmd("INCRBY")
        .arg("hits:p")
        .arg(10)
        .cmd("DECR")
        .arg("hits:p")
        .cmd("INCR")
        .arg("hits:q")
        .query_async(&mut con)
        .await
        .expect("pipeline");
    assert_eq!(replies, vec![101, 102, 112, 111, 1]);
    assert_eq!(
        bulk(&mut con, &["GET", "hits:p"]).await.as_deref(),
        Some("111")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_past_the_i64_range_are_refused_and_change_nothing() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    assert_eq!(
        int(&mut con, &["INCRBY", "big", "9223372036854775807"]).await,
        i64::MAX
    );
    let error = cmd_err(&mut con, &["INCR", "big"]).await;
    assert!(
        error.contains("increment or decrement would overflow"),
        "{error}"
    );
    assert_eq!(int(&mut con, &["DECRBY", "big", "7"]).await, i64::MAX - 7);
    assert_eq!(
        int(&mut con, &["DECRBY", "low", "9223372036854775807"]).await,
        -i64::MAX
    );
    assert_eq!(int(&mut con, &["DECR", "low"]).await, i64::MIN);
    let error = cmd_err(&mut con, &["DECR", "low"]).await;
    assert!(error.contains("overflow"), "{error}");
    assert_eq!(
        bulk(&mut con, &["GET", "low"]).await.as_deref(),
        Some("-9223372036854775808")
    );
}
