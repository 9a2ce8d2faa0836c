//! A node under a low open-file limit (`prlimit --nofile=1024`, as the hardening probe
//! ran it): 1,100 idle Redis connections used to make new connections hang and an `INCR`
//! answer `ERR storage engine: … Too many open files`. Now the node keeps descriptors for
//! its storage and lowers each client port's cap to fit the limit, so the clients past it
//! get Redis' `max number of clients reached` and writes keep working.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::{free_ports, BIN};

/// Sends one RESP command and reads one line of reply.
fn command(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_file_limit_extra_clients_are_refused_and_writes_keep_working() {
    // This process opens more than 1,024 connections itself.
    rlimit::increase_nofile_limit(4096).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (http_port, resp_port) = free_ports();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(["--resp", &format!("127.0.0.1:{resp_port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prlimit (util-linux) and speedlayer serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut first = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", resp_port)) {
            break stream;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(command(&mut first, &["INCR", "hits"]), ":1");

    // 1,100 more clients: (1024 - 512 reserved) / 2 = 256 per port fit.
    let mut refused = 0;
    let mut open = Vec::new();
    for _ in 0..1100 {
        let mut stream = TcpStream::connect(("127.0.0.1", resp_port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply).unwrap_or(0);
        let reply = String::from_utf8_lossy(&reply[..n]).to_string();
        if reply.starts_with("-ERR max number of clients reached") {
            refused += 1;
        } else {
            assert!(reply.starts_with("+PONG"), "an extra client got {reply:?}");
            open.push(stream);
        }
    }
    assert!(
        refused >= 1100 - 256 && !open.is_empty(),
        "{refused} of 1,100 extra clients refused, {} served",
        open.len()
    );
    // Writes through a connected client still work: the storage kept its descriptors.
    for _ in 0..100 {
        let reply = command(&mut first, &["INCR", "hits"]);
        assert!(
            reply.starts_with(':'),
            "INCR under the limit answered {reply:?}"
        );
    }
    let reply = command(&mut open[0], &["INCR", "hits"]);
    assert_eq!(reply, ":102");
    // Clients gone, new ones are served again.
    drop(open);
    std::thread::sleep(Duration::from_millis(500));
    let mut again = TcpStream::connect(("127.0.0.1", resp_port)).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        command(&mut again, &["GET", "hits"]),
        "$3",
        "the bulk header of 102"
    );
    assert!(child.try_wait().unwrap().is_none(), "the node exited");
    let text = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        text.contains("lowered_to=256"),
        "the node did not say it lowered --max-clients:\n{text}"
    );
    child.kill().unwrap();
    let _ = child.wait();
}
