//! The Redis-protocol front end together with the rest of the node: RESP and HTTP reading
//! and writing the same data, RESP writes surviving a restart, and raw-TCP checks of the
//! wire itself (protocol errors, inline commands, exact reply bytes).
//!
//! Keys: `view:partition[:clustering]` addresses a declared view; any other key lives in
//! the implicit `redis` view and takes the type of its first write.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::resp::{
    assert_closed, bulk, cmd_err, exchange, http_value, int, members, ok, read_reply, read_until,
    set_of, TestNode, WRONGTYPE,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_and_http_see_the_same_data() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    node.declare("visitors", "set").await;
    let mut con = node.connect(false).await;

    // RESP writes, HTTP reads.
    assert_eq!(int(&mut con, &["INCR", "hits:/about:10"]).await, 1);
    assert_eq!(int(&mut con, &["INCRBY", "hits:/about:10", "4"]).await, 5);
    assert_eq!(int(&mut con, &["INCR", "hits:/about:11"]).await, 1);
    assert_eq!(http_value(&node, "hits", "/about", "10").await, json!(5));
    assert_eq!(http_value(&node, "hits", "/about", "11").await, json!(1));
    assert_eq!(
        int(&mut con, &["SADD", "visitors:/about", "ann", "bob"]).await,
        2
    );
    let visitors = http_value(&node, "visitors", "/about", "").await;
    let mut names: Vec<String> = serde_json::from_value(visitors.clone())
        .unwrap_or_else(|e| panic!("set value {visitors}: {e}"));
    names.sort();
    assert_eq!(names, vec!["ann", "bob"]);

    // HTTP writes, RESP reads (GET, HGET with the clustering key as the field, HGETALL).
    let response = node
        .http
        .post(node.url("/v1/views/hits/update"))
        .json(&json!([
            {"key": "/home", "clustering": "7", "op": "incr", "by": 5},
            {"key": "/home", "clustering": "8", "op": "incr", "by": 2},
            {"key": "/about", "clustering": "10", "op": "incr", "by": 100},
        ]))
        .send()
        .await
        .expect("HTTP update");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    assert_eq!(
        bulk(&mut con, &["GET", "hits:/home:7"]).await.as_deref(),
        Some("5")
    );
    assert_eq!(
        bulk(&mut con, &["HGET", "hits:/home", "8"])
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        bulk(&mut con, &["GET", "hits:/about:10"]).await.as_deref(),
        Some("105")
    );
    let all: BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg("hits:/home")
        .query_async(&mut con)
        .await
        .expect("HGETALL over a declared view");
    assert_eq!(
        all,
        [("7".to_string(), 5), ("8".to_string(), 2)]
            .into_iter()
            .collect()
    );
    // HINCRBY on view:partition + field writes the clustering key HTTP reads.
    assert_eq!(int(&mut con, &["HINCRBY", "hits:/home", "7", "1"]).await, 6);
    assert_eq!(http_value(&node, "hits", "/home", "7").await, json!(6));

    let response = node
        .http
        .post(node.url("/v1/views/visitors/update"))
        .json(&json!({"key": "/about", "op": "add", "members": ["cy"]}))
        .send()
        .await
        .expect("HTTP update");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    assert_eq!(
        members(&mut con, &["SMEMBERS", "visitors:/about"]).await,
        set_of(&["ann", "bob", "cy"])
    );
    assert_eq!(int(&mut con, &["SCARD", "visitors:/about"]).await, 3);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_writes_survive_a_restart() {
    let node = TestNode::start().await;
    node.declare("hits", "counter").await;
    let mut con = node.connect(false).await;
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("INCR").arg(format!("durable:{}", i % 3)).ignore();
    }
    pipe.exec_async(&mut con).await.expect("INCR pipeline");
    assert_eq!(int(&mut con, &["INCRBY", "hits:/p:1", "42"]).await, 42);
    assert_eq!(int(&mut con, &["SADD", "dset", "a", "b", "c"]).await, 3);
    assert_eq!(int(&mut con, &["SREM", "dset", "b"]).await, 1);
    ok(&mut con, &["SET", "dstr", "persisted"]).await;
    assert_eq!(int(&mut con, &["HINCRBY", "dhash", "f", "9"]).await, 9);
    assert_eq!(int(&mut con, &["PFADD", "dhll", "x", "y", "z"]).await, 1);
    assert_eq!(int(&mut con, &["INCR", "gone"]).await, 1);
    assert_eq!(int(&mut con, &["DEL", "gone"]).await, 1);
    drop(con);

    let dir = node.stop().await;
    let node = TestNode::start_in(dir, None).await;
    let mut con = node.connect(false).await;
    for k in 0..3 {
        assert_eq!(
            bulk(&mut con, &["GET", &format!("durable:{k}")])
                .await
                .as_deref(),
            Some("100"),
            "durable:{k}"
        );
    }
    assert_eq!(
        bulk(&mut con, &["GET", "hits:/p:1"]).await.as_deref(),
        Some("42")
    );
    assert_eq!(
        members(&mut con, &["SMEMBERS", "dset"]).await,
        set_of(&["a", "c"])
    );
    assert_eq!(
        bulk(&mut con, &["GET", "dstr"]).await.as_deref(),
        Some("persisted")
    );
    assert_eq!(
        bulk(&mut con, &["HGET", "dhash", "f"]).await.as_deref(),
        Some("9")
    );
    assert_eq!(int(&mut con, &["PFCOUNT", "dhll"]).await, 3);
    assert_eq!(int(&mut con, &["EXISTS", "gone"]).await, 0);
    // Types survive too: the counter still refuses set commands, and still counts.
    assert_eq!(
        cmd_err(&mut con, &["SADD", "durable:0", "x"]).await,
        WRONGTYPE
    );
    assert_eq!(int(&mut con, &["INCR", "durable:0"]).await, 101);
    drop(con);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_protocol_errors_inline_commands_and_exact_replies() {
    let node = TestNode::start().await;
    let addr = node.node().resp_addr;

    // A malformed bulk length: an error line, then the server closes the connection.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"*2\r\n$abc\r\n").await.expect("write");
    let (reply, _) = read_reply(&mut stream, usize::MAX).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");
    assert!(
        reply.ends_with("\r\n") && reply.matches("\r\n").count() == 1,
        "{reply:?}"
    );
    // (read_reply returned because of EOF, or it would have waited 10 s and failed here.)
    assert_closed(&mut stream, "a protocol error").await;

    // Requests before the malformed one in the same read are still answered first.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$-5\r\n")
        .await
        .expect("write");
    let (reply, eof) = read_reply(&mut stream, usize::MAX).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(eof, "connection left open: {reply:?}");
    assert!(
        reply.starts_with("+PONG\r\n-ERR Protocol error"),
        "{reply:?}"
    );

    // A new connection is served normally.
    exchange(addr, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n").await;
    // Inline commands (what `telnet` or `nc` send).
    let mut inline = exchange(addr, b"PING\r\n", b"+PONG\r\n").await;
    inline.write_all(b"ECHO hello\r\n").await.unwrap();
    let (got, _) = read_reply(&mut inline, 11).await;
    assert_eq!(got, b"$5\r\nhello\r\n");
    inline
        .write_all(b"INCR inline\r\nINCR inline\r\nGET inline\r\n")
        .await
        .unwrap();
    let (got, _) = read_reply(&mut inline, 15).await;
    assert_eq!(String::from_utf8_lossy(&got), ":1\r\n:2\r\n$1\r\n2\r\n");

    // Exact WRONGTYPE line, and an error in the middle of a pipeline leaves the
    // commands around it alone.
    let expected = format!(":1\r\n-{WRONGTYPE}\r\n:2\r\n");
    exchange(
        addr,
        b"INCR wt\r\nSADD wt x\r\n*2\r\n$4\r\nINCR\r\n$2\r\nwt\r\n",
        expected.as_bytes(),
    )
    .await;
    // Unknown command, then the connection carries on.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"LPUSH list x\r\nPING\r\n").await.unwrap();
    let got = read_until(&mut stream, b"+PONG\r\n").await;
    assert!(got.starts_with("-ERR unknown command"), "{got:?}");
    assert_eq!(got.matches("\r\n").count(), 2, "{got:?}");

    // QUIT: +OK, nothing after it runs, and the connection closes.
    let mut stream = exchange(addr, b"INCR q\r\nQUIT\r\nINCR q\r\n", b":1\r\n+OK\r\n").await;
    assert_closed(&mut stream, "QUIT").await;
    exchange(addr, b"GET q\r\n", b"$1\r\n1\r\n").await;

    // A frame split across many small writes is reassembled.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    for chunk in b"*3\r\n$6\r\nINCRBY\r\n$5\r\nsplit\r\n$2\r\n42\r\n".chunks(3) {
        stream.write_all(chunk).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (got, _) = read_reply(&mut stream, 5).await;
    assert_eq!(got, b":42\r\n");
    drop(stream);
    drop(inline);
    node.stop().await;
}
