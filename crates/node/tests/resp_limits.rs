//! Redis-protocol connection limits: past `max_clients` open connections a new client
//! gets Redis's own `-ERR max number of clients reached` and is closed (counted in INFO
//! `rejected_connections`); once a client leaves, a new one is served. A client that
//! stalls in the middle of a request (slow-loris) is answered an error and closed after
//! the request timeout; an idle client is kept, as Redis keeps it.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::http::TestNode;

/// Sends PING and returns what the node answered (until it closes or 2 s pass; "" when
/// it closed without a word, or the close reset the connection first).
async fn ping(stream: &mut TcpStream) -> String {
    // A refused client's write may meet the close: its answer is then what it read.
    let _ = stream.write_all(b"PING\r\n").await;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("no answer within 2 s")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_clients_a_client_gets_redis_reply_and_later_ones_are_served() {
    let node = TestNode::start_with(|c| c.max_clients = 5).await;
    let addr = node.resp_addr();
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ping(&mut stream).await, "+PONG\r\n");
        open.push(stream);
    }
    let mut sixth = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), sixth.read(&mut buf))
        .await
        .expect("the refused client heard nothing")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        "-ERR max number of clients reached\r\n"
    );
    // Then closed.
    let n = tokio::time::timeout(Duration::from_secs(2), sixth.read(&mut buf))
        .await
        .expect("the refused client was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // One leaves; the next client is served, and INFO counts the refusals (the sixth,
    // and any attempt made before the server saw the leaver go).
    drop(open.pop());
    let mut served = None;
    let mut refused = 1;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        match ping(&mut stream).await.as_str() {
            "+PONG\r\n" => {
                served = Some(stream);
                break;
            }
            // Refused; "" when the close reset the connection before the reply was read.
            "-ERR max number of clients reached\r\n" | "" => refused += 1,
            other => panic!("unexpected answer while the server frees a slot: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = served.expect("no client served after one left");
    stream.write_all(b"INFO stats\r\n").await.unwrap();
    let mut info = String::new();
    while !info.contains("rejected_connections:") || !info.ends_with("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed while reading INFO: {info}");
        info.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        info.contains(&format!("rejected_connections:{refused}\r\n")),
        "{refused} refusals: {info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_mid_request_is_closed_and_an_idle_one_is_kept() {
    let node = TestNode::start_with(|c| c.request_timeout = Duration::from_secs(1)).await;
    let addr = node.resp_addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the stalled client was not answered within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("-ERR request incomplete"), "{answer}");
    let n = tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut buf))
        .await
        .expect("the stalled client was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    eprintln!("stalled client closed after {:?}", started.elapsed());
    // The idle one (nothing sent for as long) is still served.
    assert_eq!(ping(&mut idle).await, "+PONG\r\n");
}
