//! speedlayer's two RESP additions through redis-rs against a real node: `ID writer seq`
//! makes the next write idempotent (a retry with the same id counts once, on any
//! connection, also in pipelines), and `CONSISTENCY` sets a connection's consistency.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::resp::{bulk, cmd_err, int, ok, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_its_id_counts_once_on_any_connection() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    ok(&mut con, &["ID", "billing", "1"]).await;
    assert_eq!(int(&mut con, &["INCRBY", "revenue", "30"]).await, 30);
    // The retry (its reply was lost, say) on another connection: counted once, and
    // answered with the total as it stands.
    let mut retry = node.connect(false).await;
    ok(&mut retry, &["ID", "billing", "1"]).await;
    assert_eq!(int(&mut retry, &["INCRBY", "revenue", "30"]).await, 30);
    // The producer's next update counts.
    ok(&mut retry, &["ID", "billing", "2"]).await;
    assert_eq!(int(&mut retry, &["INCRBY", "revenue", "12"]).await, 42);
    // Without an id a repeated INCRBY counts twice, as in Redis.
    assert_eq!(int(&mut con, &["INCRBY", "revenue", "1"]).await, 43);
    assert_eq!(int(&mut con, &["INCRBY", "revenue", "1"]).await, 44);
    assert_eq!(
        bulk(&mut con, &["GET", "revenue"]).await.as_deref(),
        Some("44")
    );

    // HINCRBY and DECR take ids too.
    for _ in 0..2 {
        ok(&mut con, &["ID", "billing", "3"]).await;
        assert_eq!(int(&mut con, &["HINCRBY", "orders", "eu", "5"]).await, 5);
        ok(&mut con, &["ID", "billing", "4"]).await;
        assert_eq!(int(&mut con, &["DECR", "stock"]).await, -1);
    }
    // A set add with an id: the retry adds nothing new.
    ok(&mut con, &["ID", "billing", "5"]).await;
    assert_eq!(int(&mut con, &["SADD", "buyers", "ann", "bob"]).await, 2);
    ok(&mut con, &["ID", "billing", "5"]).await;
    assert_eq!(int(&mut con, &["SADD", "buyers", "ann", "bob"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_in_a_pipeline_count_each_update_once_when_it_is_sent_again() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    let pipeline = || {
        let mut pipe = redis::pipe();
        for seq in 1..=10u64 {
            pipe.cmd("ID").arg("stream-7").arg(seq).ignore();
            pipe.cmd("INCRBY").arg("clicks").arg(seq);
        }
        pipe
    };
    let first: Vec<i64> = pipeline().query_async(&mut con).await.unwrap();
    let totals: Vec<i64> = (1..=10).map(|n| n * (n + 1) / 2).collect();
    assert_eq!(first, totals);
    // The whole pipeline again (its replies were lost): nothing counts twice.
    let again: Vec<i64> = pipeline().query_async(&mut con).await.unwrap();
    assert_eq!(again, vec![55; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_goes_only_to_a_write_and_bad_ids_are_refused() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 1);

    // A read after an ID is refused, not run, and the id is dropped.
    ok(&mut con, &["ID", "w", "1"]).await;
    let refused = cmd_err(&mut con, &["GET", "n"]).await;
    assert!(
        refused.starts_with("ERR ID must be followed by a write command"),
        "{refused}"
    );
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 2);
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 3);
    // Two IDs in a row: the second is refused, the first dropped.
    ok(&mut con, &["ID", "w", "2"]).await;
    assert!(cmd_err(&mut con, &["ID", "w", "3"])
        .await
        .starts_with("ERR ID must be followed"));
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 4);
    // A refused write takes its id with it: nothing was counted under it.
    ok(&mut con, &["ID", "w", "4"]).await;
    assert!(cmd_err(&mut con, &["INCRBY", "n", "x"])
        .await
        .starts_with("ERR"));
    ok(&mut con, &["ID", "w", "4"]).await;
    assert_eq!(int(&mut con, &["INCRBY", "n", "6"]).await, 10);

    for (args, error) in [
        (
            &["ID", "w"][..],
            "ERR wrong number of arguments for 'id' command",
        ),
        (
            &["ID", "", "1"][..],
            "ERR the writer must be 1 to 256 bytes of UTF-8",
        ),
        (
            &["ID", "w", "-1"][..],
            "ERR the sequence number must be an integer from 0 to 2^64-1",
        ),
    ] {
        assert_eq!(cmd_err(&mut con, args).await, error, "{args:?}");
    }
    let long = "w".repeat(257);
    assert!(cmd_err(&mut con, &["ID", &long, "1"])
        .await
        .starts_with("ERR the writer must be"));
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_is_set_per_connection() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    let mut other = node.connect(false).await;
    let defaults = bulk(&mut con, &["CONSISTENCY"]).await.unwrap();
    ok(&mut con, &["CONSISTENCY", "all", "strict"]).await;
    assert_eq!(
        bulk(&mut con, &["CONSISTENCY"]).await.as_deref(),
        Some("all strict")
    );
    ok(&mut con, &["CONSISTENCY", "one"]).await;
    assert_eq!(
        bulk(&mut con, &["CONSISTENCY"]).await.as_deref(),
        Some("one strict")
    );
    // Another connection keeps the node's defaults.
    assert_eq!(bulk(&mut other, &["CONSISTENCY"]).await, Some(defaults));
    let refused = cmd_err(&mut con, &["CONSISTENCY", "most"]).await;
    assert!(
        refused.starts_with("ERR unknown consistency 'most'"),
        "{refused}"
    );
    // One node is every owner: writes and reads work at `all`.
    ok(&mut con, &["CONSISTENCY", "all", "strict"]).await;
    assert_eq!(int(&mut con, &["INCR", "c"]).await, 1);
    assert_eq!(bulk(&mut con, &["GET", "c"]).await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_its_event_time_keeps_a_retry_in_the_same_epoch() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    let mut con = node.connect(false).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let two_hours_ago = (now - 7200).to_string();
    for _ in 0..2 {
        ok(&mut con, &["ID", "w", "1", &two_hours_ago]).await;
        assert_eq!(int(&mut con, &["INCRBY", "hits:page", "3"]).await, 3);
    }
    // The same id without its time lands in the epoch of its arrival, where that
    // writer's seq 1 is new: counted again (why a declared view's retries carry `ts`).
    ok(&mut con, &["ID", "w", "1"]).await;
    assert_eq!(int(&mut con, &["INCRBY", "hits:page", "3"]).await, 6);

    assert_eq!(
        cmd_err(&mut con, &["ID", "w", "2", "soon"]).await,
        "ERR the event time must be whole seconds since 1970"
    );
    ok(&mut con, &["ID", "w", "2", "999999999999"]).await;
    let refused = cmd_err(&mut con, &["INCRBY", "hits:page", "3"]).await;
    assert!(refused.contains("outside"), "{refused}");
    assert_eq!(int(&mut con, &["INCRBY", "hits:page", "1"]).await, 7);
}
