//! Redis writes that are safe to retry, and per-connection consistency, on a real
//! three-node cluster (real processes, real TCP):
//! - an `INCRBY` sent through node 1 whose reply is lost (a proxy between client and
//!   node drops every reply, so the client times out) and retried through node 2 with
//!   the same `ID` counts once; retried without an id it counts twice (Redis's own
//!   at-least-once behaviour: why the id exists);
//! - a connection at `CONSISTENCY all strict` has its write refused while an owner is
//!   down; at `one` the same write succeeds.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One RESP request, as a client library encodes it.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Reads one reply (simple, error, integer or bulk) from `stream`, as text; `None` when
/// nothing complete arrives within `within`.
async fn reply(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        loop {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
            if buf.ends_with(b"\r\n") {
                let line = String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned();
                if let Some(len) = line.strip_prefix('$') {
                    let len: i64 = len.parse().ok()?;
                    if len < 0 {
                        return Some("(nil)".to_string());
                    }
                    let mut body = vec![0u8; len as usize + 2];
                    stream.read_exact(&mut body).await.ok()?;
                    return Some(String::from_utf8_lossy(&body[..len as usize]).into_owned());
                }
                return Some(line);
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

/// Sends `args` and waits for the reply (10 s).
async fn call(stream: &mut TcpStream, args: &[&str]) -> String {
    stream.write_all(&encode(args)).await.unwrap();
    reply(stream, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no reply to {args:?}"))
}

/// A proxy to `upstream` that forwards what the client sends and drops every reply,
/// counting the reply bytes it dropped. Serves one connection.
async fn reply_dropping_proxy(upstream: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dropped = Arc::new(AtomicUsize::new(0));
    let counted = dropped.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut from_client, _to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        });
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_server.read(&mut buf).await {
            if n == 0 {
                break;
            }
            counted.fetch_add(n, Ordering::SeqCst);
        }
    });
    (addr, dropped)
}

fn resp_addr(cluster: &Cluster, i: usize) -> String {
    format!("127.0.0.1:{}", cluster.nodes[i].config().resp_port)
}

/// Sends `INCRBY key by` (after `ID writer 1` when `with_id`) through node 1 behind a
/// proxy that loses the replies; the client gives up after 1 s. Returns once node 1 has
/// answered (to the proxy) every command, so the first attempt is complete.
async fn send_and_lose_the_reply(cluster: &Cluster, key: &str, by: &str, with_id: bool) {
    let (proxy, dropped) = reply_dropping_proxy(resp_addr(cluster, 0)).await;
    let mut client = TcpStream::connect(&proxy).await.unwrap();
    let mut request = Vec::new();
    // Node 1 answers `+OK\r\n` (5 bytes) to ID, then the total (`:N\r\n`, at least 4).
    let mut expected = 4;
    if with_id {
        request.extend(encode(&["ID", "checkout", "1"]));
        expected += 5;
    }
    request.extend(encode(&["INCRBY", key, by]));
    client.write_all(&request).await.unwrap();
    assert_eq!(
        reply(&mut client, Duration::from_secs(1)).await,
        None,
        "the proxy let a reply through"
    );
    for _ in 0..200 {
        if dropped.load(Ordering::SeqCst) >= expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node 1 never answered the first attempt");
}

/// The value of `key` read at `all` through node 3.
async fn read_at_all(cluster: &Cluster, key: &str) -> String {
    let mut con = TcpStream::connect(resp_addr(cluster, 2)).await.unwrap();
    assert_eq!(call(&mut con, &["CONSISTENCY", "all"]).await, "+OK");
    call(&mut con, &["GET", key]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_is_lost_counts_once_when_retried_elsewhere_with_its_id() {
    let cluster = Cluster::start_ready(ClusterOptions::new(3)).await;

    // With an id: the retry through node 2 counts nothing more.
    send_and_lose_the_reply(&cluster, "orders", "7", true).await;
    let mut retry = TcpStream::connect(resp_addr(&cluster, 1)).await.unwrap();
    assert_eq!(call(&mut retry, &["ID", "checkout", "1"]).await, "+OK");
    assert_eq!(call(&mut retry, &["INCRBY", "orders", "7"]).await, ":7");
    assert_eq!(read_at_all(&cluster, "orders").await, "7");

    // Without one, the same retry counts twice.
    send_and_lose_the_reply(&cluster, "orders-anonymous", "7", false).await;
    assert_eq!(
        call(&mut retry, &["INCRBY", "orders-anonymous", "7"]).await,
        ":14"
    );
    assert_eq!(read_at_all(&cluster, "orders-anonymous").await, "14");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_all_strict_is_refused_while_an_owner_is_down_and_one_is_not() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    let mut con = TcpStream::connect(resp_addr(&cluster, 0)).await.unwrap();
    assert_eq!(
        call(&mut con, &["CONSISTENCY", "all", "strict"]).await,
        "+OK"
    );
    assert_eq!(call(&mut con, &["INCR", "k"]).await, ":1");

    // Every node owns every key (3 replicas): with node 3 down, `all` cannot be met.
    cluster.kill(2);
    cluster
        .wait_for_states(&[0], &[2], "down", Duration::from_secs(20))
        .await;
    let refused = call(&mut con, &["INCR", "k"]).await;
    assert!(refused.starts_with("-UNAVAILABLE"), "{refused}");
    assert_eq!(call(&mut con, &["CONSISTENCY", "one"]).await, "+OK");
    // 2, or 3 if the refused write was applied on the owners that are up (a refused
    // write may have been applied: a retry with an id is how a client knows).
    let counted = call(&mut con, &["INCR", "k"]).await;
    assert!(counted == ":2" || counted == ":3", "{counted}");
    // Another connection keeps the node's defaults (quorum): two owners are up.
    let mut other = TcpStream::connect(resp_addr(&cluster, 1)).await.unwrap();
    assert!(call(&mut other, &["INCR", "k"]).await.starts_with(':'));
}
