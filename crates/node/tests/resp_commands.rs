//! The Redis-protocol front end's commands through redis-rs against a real node, as
//! the README's "Redis protocol" section lists them: connection and server commands (PING, ECHO,
//! SELECT, HELLO, CLIENT, COMMAND, INFO, QUIT), strings and counters, hashes of counters,
//! sets and HyperLogLogs.
//!
//! Keys: `view:partition[:clustering]` addresses a declared view; any other key lives in
//! the implicit `redis` view and takes the type of its first write.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use redis::Value;
use support::resp::{
    bulk, cmd, cmd_err, int, members, ok, set_of, text, try_cmd, TestNode, WRONGTYPE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_server_commands() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    assert_eq!(
        cmd(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    assert_eq!(
        bulk(&mut con, &["PING", "hello there"]).await.as_deref(),
        Some("hello there")
    );
    assert_eq!(
        bulk(&mut con, &["ECHO", "a\r\nbinary-ish\0value"])
            .await
            .as_deref(),
        Some("a\r\nbinary-ish\0value")
    );
    assert!(cmd_err(&mut con, &["ECHO"])
        .await
        .starts_with("ERR wrong number of arguments for 'echo'"));

    ok(&mut con, &["SELECT", "0"]).await;
    let select = cmd_err(&mut con, &["SELECT", "1"]).await;
    assert!(select.starts_with("ERR "), "SELECT 1: {select}");
    let select = cmd_err(&mut con, &["SELECT", "zero"]).await;
    assert!(select.starts_with("ERR "), "SELECT zero: {select}");

    // No password configured: AUTH is refused the way Redis refuses it.
    let auth = cmd_err(&mut con, &["AUTH", "whatever"]).await;
    assert!(
        auth.starts_with("ERR AUTH <password> called without any password configured"),
        "AUTH: {auth}"
    );

    // HELLO 2 answers the server's description as a flat array (a RESP2 map).
    let hello = match cmd(&mut con, &["HELLO", "2"]).await {
        Value::Array(items) => items,
        other => panic!("HELLO 2: expected a flat array, got {other:?}"),
    };
    let fields: HashMap<String, String> = hello
        .chunks(2)
        .filter(|pair| pair.len() == 2 && !matches!(pair[1], Value::Array(_)))
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect();
    assert_eq!(
        fields.get("proto").map(String::as_str),
        Some("2"),
        "{hello:?}"
    );
    assert_eq!(fields.get("server").map(String::as_str), Some("speedlayer"));
    let noproto = cmd_err(&mut con, &["HELLO", "4"]).await;
    assert!(noproto.starts_with("NOPROTO"), "HELLO 4: {noproto}");

    // CLIENT SETNAME / GETNAME.
    assert_eq!(bulk(&mut con, &["CLIENT", "GETNAME"]).await, None);
    ok(&mut con, &["CLIENT", "SETNAME", "resp-test"]).await;
    assert_eq!(
        bulk(&mut con, &["CLIENT", "GETNAME"]).await.as_deref(),
        Some("resp-test")
    );
    assert!(cmd_err(&mut con, &["CLIENT", "SETNAME", "has space"])
        .await
        .starts_with("ERR "));
    assert_eq!(
        bulk(&mut con, &["CLIENT", "GETNAME"]).await.as_deref(),
        Some("resp-test"),
        "a refused name leaves the old one"
    );
    // The name is per connection.
    let mut other = node.connect(false).await;
    assert_eq!(bulk(&mut other, &["CLIENT", "GETNAME"]).await, None);

    // COMMAND COUNT and COMMAND agree, and list every command the contract requires.
    let count = int(&mut con, &["COMMAND", "COUNT"]).await;
    assert!(count > 0, "COMMAND COUNT = {count}");
    let entries = match cmd(&mut con, &["COMMAND"]).await {
        Value::Array(entries) => entries,
        other => panic!("COMMAND: expected an array, got {other:?}"),
    };
    assert_eq!(entries.len() as i64, count, "COMMAND vs COMMAND COUNT");
    let names: BTreeSet<String> = entries
        .iter()
        .map(|entry| match entry {
            Value::Array(fields) if !fields.is_empty() => text(&fields[0]).to_ascii_uppercase(),
            other => panic!("COMMAND entry: {other:?}"),
        })
        .collect();
    for required in [
        "PING",
        "ECHO",
        "HELLO",
        "AUTH",
        "SELECT",
        "GET",
        "SET",
        "DEL",
        "EXISTS",
        "MGET",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "HINCRBY",
        "HGET",
        "HGETALL",
        "SADD",
        "SREM",
        "SMEMBERS",
        "SISMEMBER",
        "SCARD",
        "PFADD",
        "PFCOUNT",
        "PFMERGE",
        "COMMAND",
        "INFO",
        "QUIT",
    ] {
        assert!(
            names.contains(required),
            "COMMAND lacks {required}: {names:?}"
        );
    }

    // INFO: every section Redis tools look for.
    let info = text(&cmd(&mut con, &["INFO"]).await);
    for section in ["# Server", "# Clients", "# Stats", "# Keyspace"] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info.contains("redis_version:"), "{info}");
    let clients = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .expect("connected_clients line")
        .trim()
        .parse::<u64>()
        .expect("connected_clients is a number");
    assert!(clients >= 2, "two connections are open: {info}");
    let server_only = text(&cmd(&mut con, &["INFO", "server"]).await);
    assert!(server_only.contains("# Server"), "{server_only}");
    assert!(!server_only.contains("# Keyspace"), "{server_only}");

    // Unknown commands.
    let unknown = cmd_err(&mut con, &["NOSUCHCOMMAND", "arg1"]).await;
    assert!(unknown.starts_with("ERR unknown command"), "{unknown}");
    assert!(unknown.contains("NOSUCHCOMMAND"), "{unknown}");

    // The connection is still usable after all those errors.
    assert_eq!(
        cmd(&mut con, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );

    // QUIT: +OK, then the server closes the connection.
    ok(&mut con, &["QUIT"]).await;
    let mut closed = false;
    for _ in 0..50 {
        if try_cmd(&mut con, &["PING"]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the connection still answers after QUIT");
    // Other connections are unaffected.
    assert_eq!(
        cmd(&mut other, &["PING"]).await,
        Value::SimpleString("PONG".into())
    );
    drop((con, other));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_counters_exists_mget_del() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // SET / GET.
    assert_eq!(bulk(&mut con, &["GET", "greeting"]).await, None);
    ok(&mut con, &["SET", "greeting", "hello"]).await;
    assert_eq!(
        bulk(&mut con, &["GET", "greeting"]).await.as_deref(),
        Some("hello")
    );
    ok(&mut con, &["SET", "greeting", "hello again"]).await;
    assert_eq!(
        bulk(&mut con, &["GET", "greeting"]).await.as_deref(),
        Some("hello again")
    );
    // SET with options is refused (keys expire by epoch) and changes nothing.
    let ex = cmd_err(&mut con, &["SET", "greeting", "bye", "EX", "10"]).await;
    assert!(ex.starts_with("ERR "), "SET EX: {ex}");
    let ex = cmd_err(&mut con, &["SET", "fresh", "v", "EX", "10"]).await;
    assert!(ex.starts_with("ERR "), "SET EX: {ex}");
    assert_eq!(
        bulk(&mut con, &["GET", "greeting"]).await.as_deref(),
        Some("hello again")
    );
    assert_eq!(bulk(&mut con, &["GET", "fresh"]).await, None);

    // The INCR family answers the new total.
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 1);
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 2);
    assert_eq!(int(&mut con, &["INCRBY", "n", "40"]).await, 42);
    assert_eq!(int(&mut con, &["DECR", "n"]).await, 41);
    assert_eq!(int(&mut con, &["DECRBY", "n", "50"]).await, -9);
    assert_eq!(int(&mut con, &["INCRBY", "n", "-1"]).await, -10);
    assert_eq!(int(&mut con, &["DECRBY", "n", "-12"]).await, 2);
    assert_eq!(int(&mut con, &["DECR", "down"]).await, -1);
    assert_eq!(
        int(&mut con, &["INCRBY", "big", "1000000000000"]).await,
        1_000_000_000_000
    );
    // A counter reads back as its integer in a bulk string, as Redis renders integers.
    assert_eq!(
        cmd(&mut con, &["GET", "n"]).await,
        Value::BulkString(b"2".to_vec())
    );
    assert_eq!(
        bulk(&mut con, &["GET", "down"]).await.as_deref(),
        Some("-1")
    );
    assert_eq!(
        bulk(&mut con, &["GET", "big"]).await.as_deref(),
        Some("1000000000000")
    );
    // Non-integer increments.
    let not_int = cmd_err(&mut con, &["INCRBY", "n", "1.5"]).await;
    assert_eq!(not_int, "ERR value is not an integer or out of range");
    let not_int = cmd_err(&mut con, &["DECRBY", "n", "x"]).await;
    assert_eq!(not_int, "ERR value is not an integer or out of range");
    assert_eq!(bulk(&mut con, &["GET", "n"]).await.as_deref(), Some("2"));
    let arity = cmd_err(&mut con, &["INCR", "n", "extra"]).await;
    assert!(
        arity.starts_with("ERR wrong number of arguments"),
        "{arity}"
    );

    // EXISTS counts every argument that exists (a repeated key counts again).
    assert_eq!(int(&mut con, &["SADD", "aset", "m"]).await, 1);
    assert_eq!(int(&mut con, &["EXISTS", "n"]).await, 1);
    assert_eq!(int(&mut con, &["EXISTS", "nope"]).await, 0);
    assert_eq!(
        int(&mut con, &["EXISTS", "n", "greeting", "aset", "nope", "n"]).await,
        4
    );

    // MGET: strings and counters as bulk strings, nil for a missing key or another type.
    let values = cmd(&mut con, &["MGET", "greeting", "n", "nope", "aset", "down"]).await;
    assert_eq!(
        values,
        Value::Array(vec![
            Value::BulkString(b"hello again".to_vec()),
            Value::BulkString(b"2".to_vec()),
            Value::Nil,
            Value::Nil,
            Value::BulkString(b"-1".to_vec()),
        ])
    );

    // DEL answers how many existed, and a deleted key can come back as another type.
    assert_eq!(int(&mut con, &["DEL", "n", "greeting", "nope"]).await, 2);
    assert_eq!(int(&mut con, &["DEL", "n"]).await, 0);
    assert_eq!(bulk(&mut con, &["GET", "n"]).await, None);
    assert_eq!(bulk(&mut con, &["GET", "greeting"]).await, None);
    assert_eq!(int(&mut con, &["EXISTS", "n", "greeting"]).await, 0);
    assert_eq!(int(&mut con, &["DEL", "aset"]).await, 1);
    assert_eq!(int(&mut con, &["INCR", "aset"]).await, 1);
    assert_eq!(int(&mut con, &["SADD", "n", "now-a-set"]).await, 1);
    assert_eq!(
        members(&mut con, &["SMEMBERS", "n"]).await,
        set_of(&["now-a-set"])
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_of_counters() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    assert_eq!(int(&mut con, &["HINCRBY", "h", "f1", "3"]).await, 3);
    assert_eq!(int(&mut con, &["HINCRBY", "h", "f1", "2"]).await, 5);
    assert_eq!(int(&mut con, &["HINCRBY", "h", "f2", "-4"]).await, -4);
    assert_eq!(
        int(&mut con, &["HINCRBY", "h", "f:with:colons", "7"]).await,
        7
    );
    assert_eq!(int(&mut con, &["HINCRBY", "other", "f1", "100"]).await, 100);
    assert_eq!(
        bulk(&mut con, &["HGET", "h", "f1"]).await.as_deref(),
        Some("5")
    );
    assert_eq!(
        bulk(&mut con, &["HGET", "h", "f2"]).await.as_deref(),
        Some("-4")
    );
    assert_eq!(bulk(&mut con, &["HGET", "h", "missing"]).await, None);
    assert_eq!(bulk(&mut con, &["HGET", "missing", "f1"]).await, None);

    let all: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("h")
        .query_async(&mut con)
        .await
        .expect("HGETALL");
    let expected: HashMap<String, i64> = [("f1", 5), ("f2", -4), ("f:with:colons", 7)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(all, expected);
    // RESP2: a flat array of field, value, field, value.
    match cmd(&mut con, &["HGETALL", "other"]).await {
        Value::Array(items) => assert_eq!(
            items,
            vec![
                Value::BulkString(b"f1".to_vec()),
                Value::BulkString(b"100".to_vec())
            ]
        ),
        other => panic!("HGETALL in RESP2: expected a flat array, got {other:?}"),
    }
    match cmd(&mut con, &["HGETALL", "missing"]).await {
        Value::Array(items) => assert!(items.is_empty(), "{items:?}"),
        other => panic!("HGETALL of a missing key: {other:?}"),
    }
    let not_int = cmd_err(&mut con, &["HINCRBY", "h", "f1", "one"]).await;
    assert_eq!(not_int, "ERR value is not an integer or out of range");
    assert_eq!(
        bulk(&mut con, &["HGET", "h", "f1"]).await.as_deref(),
        Some("5")
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // SADD answers how many members were new.
    assert_eq!(int(&mut con, &["SADD", "s", "a", "b", "c"]).await, 3);
    assert_eq!(int(&mut con, &["SADD", "s", "c", "d"]).await, 1);
    assert_eq!(int(&mut con, &["SADD", "s", "a", "b"]).await, 0);
    assert_eq!(int(&mut con, &["SADD", "s", "e", "e", "e"]).await, 1);
    // SREM answers how many members were there.
    assert_eq!(int(&mut con, &["SREM", "s", "a", "zz"]).await, 1);
    assert_eq!(int(&mut con, &["SREM", "s", "a"]).await, 0);
    assert_eq!(
        members(&mut con, &["SMEMBERS", "s"]).await,
        set_of(&["b", "c", "d", "e"])
    );
    assert_eq!(int(&mut con, &["SISMEMBER", "s", "b"]).await, 1);
    assert_eq!(int(&mut con, &["SISMEMBER", "s", "a"]).await, 0);
    assert_eq!(int(&mut con, &["SISMEMBER", "missing", "a"]).await, 0);
    assert_eq!(int(&mut con, &["SCARD", "s"]).await, 4);
    assert_eq!(int(&mut con, &["SCARD", "missing"]).await, 0);
    assert!(members(&mut con, &["SMEMBERS", "missing"]).await.is_empty());
    // A removed member can be added again.
    assert_eq!(int(&mut con, &["SADD", "s", "a"]).await, 1);
    assert_eq!(int(&mut con, &["SCARD", "s"]).await, 5);

    // Binary-safe members, and many of them.
    let many: Vec<String> = (0..500).map(|i| format!("member:{i}\r\n")).collect();
    let mut sadd = redis::cmd("SADD");
    sadd.arg("big");
    for m in &many {
        sadd.arg(m);
    }
    let added: i64 = sadd.query_async(&mut con).await.expect("SADD 500");
    assert_eq!(added, 500);
    assert_eq!(int(&mut con, &["SCARD", "big"]).await, 500);
    let got = members(&mut con, &["SMEMBERS", "big"]).await;
    assert_eq!(got, many.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        int(&mut con, &["SISMEMBER", "big", "member:7\r\n"]).await,
        1
    );
    assert_eq!(int(&mut con, &["SISMEMBER", "big", "member:7"]).await, 0);
    let arity = cmd_err(&mut con, &["SADD", "s"]).await;
    assert!(
        arity.starts_with("ERR wrong number of arguments"),
        "{arity}"
    );
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperloglogs() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    // PFADD answers 1 when the sketch changed (or was created), 0 otherwise.
    assert_eq!(int(&mut con, &["PFADD", "p1", "a", "b", "c"]).await, 1);
    assert_eq!(int(&mut con, &["PFADD", "p1", "a"]).await, 0);
    assert_eq!(int(&mut con, &["PFADD", "p1", "b", "c"]).await, 0);
    assert_eq!(int(&mut con, &["PFADD", "p2", "c", "d", "e"]).await, 1);
    assert_eq!(int(&mut con, &["PFCOUNT", "p1"]).await, 3);
    assert_eq!(int(&mut con, &["PFCOUNT", "p2"]).await, 3);
    assert_eq!(int(&mut con, &["PFCOUNT", "missing"]).await, 0);
    // Several keys: the count of their union.
    assert_eq!(int(&mut con, &["PFCOUNT", "p1", "p2"]).await, 5);
    assert_eq!(
        int(&mut con, &["PFCOUNT", "p1", "p2", "missing", "p1"]).await,
        5
    );
    // PFMERGE into a new key; the sources are unchanged.
    ok(&mut con, &["PFMERGE", "p3", "p1", "p2"]).await;
    assert_eq!(int(&mut con, &["PFCOUNT", "p3"]).await, 5);
    assert_eq!(int(&mut con, &["PFCOUNT", "p1"]).await, 3);
    // PFMERGE into an existing key keeps what it had.
    assert_eq!(int(&mut con, &["PFADD", "p4", "x", "y"]).await, 1);
    ok(&mut con, &["PFMERGE", "p4", "p1"]).await;
    assert_eq!(int(&mut con, &["PFCOUNT", "p4"]).await, 5);
    // PFMERGE with only a destination creates an empty sketch.
    ok(&mut con, &["PFMERGE", "p5"]).await;
    assert_eq!(int(&mut con, &["EXISTS", "p5"]).await, 1);
    assert_eq!(int(&mut con, &["PFCOUNT", "p5"]).await, 0);
    // PFADD with no element: creates the key (1), then nothing to do (0).
    assert_eq!(int(&mut con, &["PFADD", "p6"]).await, 1);
    assert_eq!(int(&mut con, &["PFADD", "p6"]).await, 0);
    assert_eq!(int(&mut con, &["EXISTS", "p6"]).await, 1);

    // Many distinct elements: within a few percent (p = 14: ~0.8 % standard error).
    let mut pipe = redis::pipe();
    for chunk in 0..40 {
        let mut cmd = redis::cmd("PFADD");
        cmd.arg("visitors");
        for i in 0..500 {
            cmd.arg(format!("user-{}", chunk * 500 + i));
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.exec_async(&mut con).await.expect("PFADD pipeline");
    let estimate = int(&mut con, &["PFCOUNT", "visitors"]).await;
    assert!(
        (19_400..=20_600).contains(&estimate),
        "PFCOUNT of 20,000 distinct = {estimate}"
    );
    // Re-adding the same elements changes nothing.
    let mut again = redis::cmd("PFADD");
    again.arg("visitors");
    for i in 0..500 {
        again.arg(format!("user-{i}"));
    }
    let changed: i64 = again.query_async(&mut con).await.expect("PFADD");
    assert_eq!(changed, 0);
    assert_eq!(int(&mut con, &["PFCOUNT", "visitors"]).await, estimate);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_mset_smismember_unlink_time_and_info_sections() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;

    ok(&mut con, &["MSET", "a", "1", "b", "2"]).await;
    assert_eq!(bulk(&mut con, &["GET", "b"]).await.as_deref(), Some("2"));
    assert!(cmd_err(&mut con, &["MSET", "a", "1", "b"])
        .await
        .starts_with("ERR wrong number of arguments"));
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 1);
    // MSET over a counter: that pair is refused (WRONGTYPE), the others are written.
    assert!(cmd_err(&mut con, &["MSET", "c", "3", "n", "4"])
        .await
        .starts_with("WRONGTYPE"));
    assert_eq!(bulk(&mut con, &["GET", "c"]).await.as_deref(), Some("3"));
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 2);

    assert_eq!(int(&mut con, &["SADD", "s", "x", "y"]).await, 2);
    assert_eq!(int(&mut con, &["PFADD", "h", "x"]).await, 1);
    for (key, kind) in [
        ("a", "string"),
        ("n", "string"),
        ("s", "set"),
        ("h", "string"),
        ("nope", "none"),
    ] {
        assert_eq!(text(&cmd(&mut con, &["TYPE", key]).await), kind, "{key}");
    }
    assert_eq!(
        cmd(&mut con, &["SMISMEMBER", "s", "x", "z", "y"]).await,
        Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(1)])
    );
    assert_eq!(
        cmd(&mut con, &["SMISMEMBER", "nope", "x"]).await,
        Value::Array(vec![Value::Int(0)])
    );
    assert_eq!(int(&mut con, &["UNLINK", "a", "b", "nope"]).await, 2);
    assert_eq!(bulk(&mut con, &["GET", "a"]).await, None);

    let Value::Array(time) = cmd(&mut con, &["TIME"]).await else {
        panic!("TIME is an array")
    };
    let secs: u64 = text(&time[0]).parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) <= 2, "{secs} vs {now}");
    assert!(text(&time[1]).parse::<u32>().unwrap() < 1_000_000);

    let info = text(&cmd(&mut con, &["INFO", "server", "cluster"]).await);
    assert!(info.contains("arch_bits:64"), "{info}");
    assert!(info.contains("cluster_enabled:0"), "{info}");
    assert!(!info.contains("# Stats"), "{info}");

    // CONFIG GET: true values of the settings that exist, by Redis glob; nothing else.
    let config: Vec<(String, String)> =
        pairs(cmd(&mut con, &["CONFIG", "GET", "max*", "APPENDFSYNC"]).await)
            .iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect();
    let names: Vec<&str> = config.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["appendfsync", "maxclients"]);
    assert_eq!(config[0].1, "always");
    // --max-clients (10,000), or lower where the open-file limit cannot hold it.
    let max_clients: usize = config[1].1.parse().unwrap();
    assert!((1..=10_000).contains(&max_clients), "{config:?}");
    let bulk_len = pairs(cmd(&mut con, &["CONFIG", "GET", "proto-max-bulk-len"]).await);
    assert_eq!(text(&bulk_len[0].1), (1024 * 1024).to_string());
    assert!(pairs(cmd(&mut con, &["CONFIG", "GET", "nosuch*"]).await).is_empty());
    assert!(cmd_err(&mut con, &["CONFIG", "SET", "maxclients", "5"])
        .await
        .starts_with("ERR CONFIG SET is not supported"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_queues_and_runs_together_and_discard_drops() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    let queued = Value::SimpleString("QUEUED".into());

    ok(&mut con, &["MULTI"]).await;
    assert_eq!(cmd(&mut con, &["INCR", "t"]).await, queued);
    assert_eq!(cmd(&mut con, &["SADD", "ts", "a", "b"]).await, queued);
    assert_eq!(cmd(&mut con, &["GET", "t"]).await, queued);
    // Nothing ran yet.
    let mut other = node.connect(false).await;
    assert_eq!(bulk(&mut other, &["GET", "t"]).await, None);
    assert_eq!(
        cmd(&mut con, &["EXEC"]).await,
        Value::Array(vec![
            Value::Int(1),
            Value::Int(2),
            Value::BulkString(b"1".to_vec())
        ])
    );

    // DISCARD drops what was queued.
    ok(&mut con, &["MULTI"]).await;
    assert_eq!(cmd(&mut con, &["INCR", "t"]).await, queued);
    ok(&mut con, &["DISCARD"]).await;
    assert_eq!(bulk(&mut con, &["GET", "t"]).await.as_deref(), Some("1"));

    // An unknown command while queueing aborts the transaction: nothing runs.
    ok(&mut con, &["MULTI"]).await;
    assert_eq!(cmd(&mut con, &["INCR", "t"]).await, queued);
    assert!(cmd_err(&mut con, &["NOSUCH", "x"])
        .await
        .starts_with("ERR unknown command"));
    assert!(cmd_err(&mut con, &["EXEC"]).await.starts_with("EXECABORT"));
    assert_eq!(bulk(&mut con, &["GET", "t"]).await.as_deref(), Some("1"));

    // Ids work inside: the same transaction sent twice counts once.
    for _ in 0..2 {
        ok(&mut con, &["MULTI"]).await;
        assert_eq!(cmd(&mut con, &["ID", "tx", "1"]).await, queued);
        assert_eq!(cmd(&mut con, &["INCRBY", "t", "10"]).await, queued);
        assert_eq!(
            cmd(&mut con, &["EXEC"]).await,
            Value::Array(vec![Value::Okay, Value::Int(11)])
        );
    }

    assert_eq!(cmd_err(&mut con, &["EXEC"]).await, "ERR EXEC without MULTI");
    assert_eq!(
        cmd_err(&mut con, &["DISCARD"]).await,
        "ERR DISCARD without MULTI"
    );
    assert!(cmd_err(&mut con, &["WATCH", "t"])
        .await
        .starts_with("ERR WATCH is not supported"));
    ok(&mut con, &["UNWATCH"]).await;
    ok(&mut con, &["MULTI"]).await;
    assert_eq!(
        cmd_err(&mut con, &["MULTI"]).await,
        "ERR MULTI calls can not be nested"
    );
    ok(&mut con, &["DISCARD"]).await;
}

/// docs/redis-compat.md names every command COMMAND lists (in its family table), so the
/// page cannot fall behind the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_the_server_lists_is_in_the_compatibility_page() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    let Value::Array(entries) = cmd(&mut con, &["COMMAND"]).await else {
        panic!("COMMAND is an array")
    };
    let count = int(&mut con, &["COMMAND", "COUNT"]).await;
    assert_eq!(entries.len() as i64, count);
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/redis-compat.md"),
    )
    .unwrap();
    let families = page
        .split("## Command families")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a 'Command families' section");
    let mut missing = Vec::new();
    for entry in &entries {
        let Value::Array(fields) = entry else {
            panic!("a COMMAND entry is an array: {entry:?}")
        };
        let name = text(&fields[0]).to_ascii_uppercase();
        // As a command of its own (`NAME`, `NAME …`) or with a subcommand (`NAME SUB`).
        let named =
            families.contains(&format!("`{name}`")) || families.contains(&format!("`{name} "));
        if !named {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/redis-compat.md does not name these commands in its family table: {missing:?}"
    );
    // COMMAND DOCS documents exactly those commands, each with a summary, a group and a
    // status that the page's row for the command (the row naming it in its first column)
    // gives too.
    let docs = pairs(cmd(&mut con, &["COMMAND", "DOCS"]).await);
    let mut documented: Vec<String> = docs.iter().map(|(k, _)| text(k)).collect();
    let mut listed: Vec<String> = entries
        .iter()
        .map(|e| match e {
            Value::Array(fields) => text(&fields[0]),
            other => panic!("{other:?}"),
        })
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        documented, listed,
        "COMMAND DOCS and COMMAND list other commands"
    );
    let rows: Vec<(&str, &str)> = families
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').skip(1);
            Some((cells.next()?, cells.next()?.trim()))
        })
        .collect();
    let mut disagree = Vec::new();
    for (name, doc) in &docs {
        let name = text(name).to_ascii_uppercase();
        let fields = pairs(doc.clone());
        let field = |wanted: &str| {
            fields
                .iter()
                .find(|(k, _)| text(k) == wanted)
                .map(|(_, v)| text(v))
                .unwrap_or_else(|| panic!("{name}'s docs have no {wanted}"))
        };
        assert!(!field("summary").is_empty() && !field("group").is_empty());
        let status = field("speedlayer_status");
        let row = rows.iter().find(|(family, _)| {
            family.contains(&format!("`{name}`")) || family.contains(&format!("`{name} "))
        });
        match row {
            Some((_, page_status)) if page_status.contains(status.as_str()) => {}
            other => disagree.push(format!(
                "{name}: docs say {status}, the page's row {other:?}"
            )),
        }
    }
    assert!(
        disagree.is_empty(),
        "COMMAND DOCS and docs/redis-compat.md disagree:\n{}",
        disagree.join("\n")
    );
    // Named commands only (unknown names left out).
    let some = pairs(cmd(&mut con, &["COMMAND", "DOCS", "get", "nosuch"]).await);
    assert_eq!(some.len(), 1);
}

/// The pairs of a map reply (a RESP3 map, or RESP2's flat array of keys and values).
fn pairs(value: Value) -> Vec<(Value, Value)> {
    match value {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => flat
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_algebra_and_random_members() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    assert_eq!(int(&mut con, &["SADD", "a", "1", "2", "3"]).await, 3);
    assert_eq!(int(&mut con, &["SADD", "b", "2", "3", "4"]).await, 3);
    assert_eq!(
        members(&mut con, &["SINTER", "a", "b"]).await,
        set_of(&["2", "3"])
    );
    assert_eq!(
        members(&mut con, &["SUNION", "a", "b", "nope"]).await,
        set_of(&["1", "2", "3", "4"])
    );
    assert_eq!(
        members(&mut con, &["SDIFF", "a", "b"]).await,
        set_of(&["1"])
    );
    assert_eq!(
        members(&mut con, &["SINTER", "a", "nope"]).await,
        set_of(&[])
    );

    // STORE replaces the destination's members.
    assert_eq!(int(&mut con, &["SADD", "d", "old"]).await, 1);
    assert_eq!(int(&mut con, &["SUNIONSTORE", "d", "a", "b"]).await, 4);
    assert_eq!(
        members(&mut con, &["SMEMBERS", "d"]).await,
        set_of(&["1", "2", "3", "4"])
    );
    assert_eq!(int(&mut con, &["SINTERSTORE", "d", "a", "b"]).await, 2);
    assert_eq!(
        members(&mut con, &["SMEMBERS", "d"]).await,
        set_of(&["2", "3"])
    );
    assert_eq!(int(&mut con, &["SDIFFSTORE", "e", "a", "b"]).await, 1);
    assert_eq!(members(&mut con, &["SMEMBERS", "e"]).await, set_of(&["1"]));
    assert_eq!(int(&mut con, &["INCR", "n"]).await, 1);
    assert_eq!(cmd_err(&mut con, &["SINTER", "a", "n"]).await, WRONGTYPE);
    assert_eq!(
        cmd_err(&mut con, &["SUNIONSTORE", "n", "a"]).await,
        WRONGTYPE
    );

    let one = text(&cmd(&mut con, &["SRANDMEMBER", "a"]).await);
    assert!(["1", "2", "3"].contains(&one.as_str()), "{one}");
    assert_eq!(cmd(&mut con, &["SRANDMEMBER", "nope"]).await, Value::Nil);
    let Value::Array(two) = cmd(&mut con, &["SRANDMEMBER", "a", "2"]).await else {
        panic!("an array")
    };
    let two: BTreeSet<String> = two.iter().map(text).collect();
    assert_eq!(two.len(), 2, "distinct: {two:?}");
    let Value::Array(all) = cmd(&mut con, &["SRANDMEMBER", "a", "10"]).await else {
        panic!("an array")
    };
    assert_eq!(all.len(), 3);
    let Value::Array(repeats) = cmd(&mut con, &["SRANDMEMBER", "a", "-7"]).await else {
        panic!("an array")
    };
    assert_eq!(repeats.len(), 7);
    assert!(cmd_err(&mut con, &["SPOP", "a"])
        .await
        .starts_with("ERR SPOP is not supported"));
    assert_eq!(int(&mut con, &["SCARD", "a"]).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_of_strings_and_counters() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    assert_eq!(
        int(&mut con, &["HSET", "user", "name", "ann", "city", "oslo"]).await,
        2
    );
    assert_eq!(
        int(&mut con, &["HSET", "user", "city", "rome", "zip", "00100"]).await,
        1
    );
    assert_eq!(int(&mut con, &["HINCRBY", "user", "visits", "3"]).await, 3);
    assert_eq!(
        bulk(&mut con, &["HGET", "user", "city"]).await.as_deref(),
        Some("rome")
    );
    assert_eq!(int(&mut con, &["HLEN", "user"]).await, 4);
    assert_eq!(
        cmd(&mut con, &["HMGET", "user", "name", "nope", "visits"]).await,
        Value::Array(vec![
            Value::BulkString(b"ann".to_vec()),
            Value::Nil,
            Value::BulkString(b"3".to_vec())
        ])
    );
    let keys: Vec<String> = match cmd(&mut con, &["HKEYS", "user"]).await {
        Value::Array(keys) => keys.iter().map(text).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(keys, ["city", "name", "visits", "zip"]);
    let vals: Vec<String> = match cmd(&mut con, &["HVALS", "user"]).await {
        Value::Array(vals) => vals.iter().map(text).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(vals, ["rome", "ann", "3", "00100"]);
    assert_eq!(int(&mut con, &["HEXISTS", "user", "zip"]).await, 1);
    assert_eq!(int(&mut con, &["HDEL", "user", "zip", "nope"]).await, 1);
    assert_eq!(int(&mut con, &["HEXISTS", "user", "zip"]).await, 0);
    ok(&mut con, &["HMSET", "user", "zip", "1", "name", "bo"]).await;
    assert_eq!(int(&mut con, &["HLEN", "user"]).await, 4);
    // A field keeps the type of its first write.
    assert_eq!(
        cmd_err(&mut con, &["HSET", "user", "visits", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(
        cmd_err(&mut con, &["HINCRBY", "user", "name", "1"]).await,
        WRONGTYPE
    );
    assert!(cmd_err(&mut con, &["HSETNX", "user", "f", "v"])
        .await
        .starts_with("ERR HSETNX is not supported"));
    assert!(cmd_err(&mut con, &["HSET", "user", "odd"])
        .await
        .starts_with("ERR wrong number of arguments"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_refused_on_purpose_say_why() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    assert_eq!(int(&mut con, &["INCR", "k"]).await, 1);
    for (args, why) in [
        (&["EXPIRE", "k", "10"][..], "not a per-key TTL"),
        (&["TTL", "k"][..], "not a per-key TTL"),
        (&["SETEX", "k", "10", "v"][..], "not a per-key TTL"),
        (&["SETNX", "k", "v"][..], "cannot be atomic"),
        (&["GETSET", "k", "v"][..], "cannot be atomic"),
        (&["INCRBYFLOAT", "k", "1.5"][..], "64-bit integers"),
        (&["WAIT", "1", "0"][..], "nothing left to wait for"),
        (&["SHUTDOWN"][..], "SIGTERM"),
    ] {
        let refused = cmd_err(&mut con, args).await;
        assert!(
            refused.starts_with(&format!("ERR {} is not supported: ", args[0]))
                && refused.contains(why),
            "{args:?}: {refused}"
        );
    }
    // Nothing changed, and the node is still serving.
    assert_eq!(int(&mut con, &["INCR", "k"]).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_and_info_describe_every_open_connection() {
    let node = TestNode::start().await;
    let mut con = node.connect(false).await;
    let mut other = node.connect(false).await;
    ok(&mut con, &["CLIENT", "SETNAME", "loader"]).await;
    ok(&mut con, &["CLIENT", "SETINFO", "LIB-NAME", "my-lib"]).await;
    ok(&mut con, &["CLIENT", "SETINFO", "LIB-VER", "1.2"]).await;
    let my_id = int(&mut con, &["CLIENT", "ID"]).await;
    let other_id = int(&mut other, &["CLIENT", "ID"]).await;

    let info = text(&cmd(&mut con, &["CLIENT", "INFO"]).await);
    for field in [
        &format!("id={my_id} ")[..],
        "name=loader ",
        "lib-name=my-lib ",
        "lib-ver=1.2",
        "db=0 ",
        "cmd=client",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
    let list = text(&cmd(&mut other, &["CLIENT", "LIST"]).await);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains("name=loader "), "{list}");
    let only = text(&cmd(&mut other, &["CLIENT", "LIST", "ID", &other_id.to_string()]).await);
    assert_eq!(only.lines().count(), 1, "{only}");
    assert!(only.starts_with(&format!("id={other_id} ")), "{only}");
    assert_eq!(
        text(&cmd(&mut other, &["CLIENT", "LIST", "TYPE", "pubsub"]).await),
        ""
    );
    assert!(cmd_err(&mut other, &["CLIENT", "LIST", "TYPE", "bogus"])
        .await
        .starts_with("ERR Unknown client type"));

    // A closed connection leaves the list.
    drop(con);
    let mut listed = 2;
    for _ in 0..100 {
        listed = text(&cmd(&mut other, &["CLIENT", "LIST"]).await)
            .lines()
            .count();
        if listed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed, 1);
}
