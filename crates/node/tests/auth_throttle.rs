//! Failed passwords cost time: past three failures from one address, each further one
//! (RESP `AUTH`, HTTP bearer token) makes that address wait, doubling from 50 ms to 2 s,
//! and a pipeline of wrong `AUTH`s is one guess per round trip. Before, a client tried
//! ~950k wrong `AUTH`s a second pipelined and ~7.5k bearer tokens. The right password
//! still works, and failures are counted in `speedlayer_auth_failures`.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::http::TestNode;

const PASSWORD: &str = "s3cret-pass";

/// Writes `request` and reads until `replies` CRLF-terminated lines arrived.
async fn exchange(stream: &mut TcpStream, request: &[u8], replies: usize) -> String {
    stream.write_all(request).await.unwrap();
    let mut text = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    while text.matches("\r\n").count() < replies {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed after: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_passwords_cost_time_per_address_on_both_doors() {
    let node = TestNode::start_with(|c| c.requirepass = Some(PASSWORD.to_string())).await;
    let mut stream = TcpStream::connect(node.resp_addr()).await.unwrap();

    // A pipeline of 1,000 wrong AUTHs: every one refused, one guess checked.
    let pipeline = "AUTH wrong\r\n".repeat(1000);
    let answer = exchange(&mut stream, pipeline.as_bytes(), 1000).await;
    assert_eq!(answer.matches("-WRONGPASS").count(), 1000);

    // Wrong AUTHs one round trip each: three are free, then each waits twice as long.
    let started = Instant::now();
    for _ in 0..6 {
        let answer = exchange(&mut stream, b"AUTH wrong\r\n", 1).await;
        assert!(answer.starts_with("-WRONGPASS"), "{answer}");
    }
    let six = started.elapsed();
    // The failures so far from this address: 1 (the pipeline) + 6; the waits after
    // failures 4..=6 are 50 + 100 + 200 ms before the 5th..7th are read.
    assert!(
        six >= Duration::from_millis(340),
        "six wrong AUTHs took {six:?}"
    );
    eprintln!("six sequential wrong AUTHs took {six:?}");

    // The right password works (after the current wait) and clears the address.
    let answer = exchange(&mut stream, format!("AUTH {PASSWORD}\r\n").as_bytes(), 1).await;
    assert_eq!(answer, "+OK\r\n");
    let started = Instant::now();
    let mut fresh = TcpStream::connect(node.resp_addr()).await.unwrap();
    for _ in 0..3 {
        let answer = exchange(&mut fresh, b"AUTH wrong\r\n", 1).await;
        assert!(answer.starts_with("-WRONGPASS"));
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "a success did not clear the address"
    );

    // HTTP bearer tokens: the same throttle.
    let url = node.url("/v1/views");
    let started = Instant::now();
    for _ in 0..7 {
        let response = node
            .client
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
    let seven = started.elapsed();
    assert!(
        seven >= Duration::from_millis(340),
        "seven wrong tokens took {seven:?}"
    );
    let response = node
        .client
        .get(&url)
        .bearer_auth(PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let metrics = node
        .client
        .get(node.url("/metrics"))
        .bearer_auth(PASSWORD)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("speedlayer_auth_failures_total{door=\"resp\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("speedlayer_auth_failures_total{door=\"http\"} 7"),
        "{metrics}"
    );
}
