//! The HTTP port's limits on a real node over TCP: a client that stalls its request
//! headers or its body is closed (slow-loris), a body that keeps sending is not, and
//! connections past `--max-clients` are answered 503 and closed while the others keep
//! being served.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::http::TestNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The node's HTTP address (host:port) from its base URL.
fn http_addr(node: &TestNode) -> String {
    node.url("").trim_start_matches("http://").to_string()
}

/// Sends one `GET path` on `stream` (keep-alive) and returns the head and body read.
async fn get(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_some(stream, Duration::from_secs(5)).await
}

/// What arrives on `stream` within `within` (until a pause or the close).
async fn read_some(stream: &mut TcpStream, within: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_headers_is_closed() {
    let node = TestNode::start_with(|c| c.request_timeout = Duration::from_secs(1)).await;
    let mut stalled = TcpStream::connect(http_addr(&node)).await.unwrap();
    // Half a request, then nothing.
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // hyper may answer 408 first
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a stalled client was still open after 10 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed before the timeout: {took:?}"
    );
    // Meanwhile and afterwards, others are served.
    let mut fine = TcpStream::connect(http_addr(&node)).await.unwrap();
    assert!(get(&mut fine, "/health").await.starts_with("HTTP/1.1 200"));
}

/// Reads until the node closes `stream` (or 10 s pass); what it answered first.
async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_off_and_one_that_keeps_sending_is_not() {
    let node = TestNode::start_with(|c| c.request_timeout = Duration::from_secs(1)).await;
    node.declare_ok("hits", "counter").await;
    let head = |len: usize| {
        format!(
            "POST /v1/views/hits/update HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    let body = br#"[{"key":"k","op":"incr","by":1},{"key":"k","op":"incr","by":2}]"#;

    // Headers and half the body, then nothing: an error and the close, after the timeout.
    let mut stalled = TcpStream::connect(http_addr(&node)).await.unwrap();
    stalled
        .write_all(head(body.len()).as_bytes())
        .await
        .unwrap();
    stalled.write_all(&body[..10]).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut stalled)
        .await
        .expect("a client stalling its body was still open after 10 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut off before the timeout: {took:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "answer to a stalled body: {answer:?}"
    );

    // The same body a byte every 300 ms (4 times the timeout in all): served.
    let mut steady = TcpStream::connect(http_addr(&node)).await.unwrap();
    steady.write_all(head(body.len()).as_bytes()).await.unwrap();
    steady.write_all(&body[..body.len() - 12]).await.unwrap();
    for byte in &body[body.len() - 12..] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        steady.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_some(&mut steady, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""applied":2"#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_clients_get_503_and_the_rest_are_served() {
    let node = TestNode::start_with(|c| c.max_clients = 3).await;
    let addr = http_addr(&node);
    // The test's own reqwest client may hold a pooled connection: fill the port up to
    // the limit with raw connections, each served once (so it is open and counted).
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let answer = get(&mut stream, "/health").await;
        if answer.starts_with("HTTP/1.1 200") {
            open.push(stream);
        } else {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("no connection was refused at the limit");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    // The open ones are still served.
    for stream in &mut open {
        assert!(get(stream, "/health").await.starts_with("HTTP/1.1 200"));
    }
    // One leaves: a new connection is served again.
    drop(open.pop());
    let mut served = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        if get(&mut stream, "/health")
            .await
            .starts_with("HTTP/1.1 200")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no connection served after one left");
}
