//! The real `redis-cli` against the real `speedlayer serve` binary: a handful of commands,
//! then `redis-cli --pipe` mass insertion of 100,000 RESP-encoded commands, checked
//! against a model of what they must have done.
//!
//! `redis-cli` comes from Debian's `redis-tools` (CI installs it in `.ci/run`). When it is
//! missing this test fails with a message saying so: it never skips silently.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod support;

use support::redis_cli::{cli, cli_raw, require_redis_cli, run_cli};
use support::{free_ports, Server};

/// Commands sent through `redis-cli --pipe`.
const MASS_COMMANDS: usize = 100_000;
/// Counters the mass insertion's INCRs spread over.
const MASS_COUNTERS: usize = 1_000;
/// Sets the mass insertion's SADDs spread over.
const MASS_SETS: usize = 50;

/// Polls a RESP `PING` until `+PONG`, for at most 60 s; panics if the process exits.
fn wait_ready(server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        server.assert_running();
        if ping(server.resp_port) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "speedlayer serve did not answer PING on port {} within 60 s",
            server.resp_port
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when a RESP `PING` on `port` answers `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Appends `args` as one RESP multibulk request.
fn encode(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
}

#[test]
fn redis_cli_commands_and_mass_insertion() {
    require_redis_cli();
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, resp_port) = free_ports();
    let mut server = Server::spawn(
        &dir.path().join("data"),
        http_port,
        resp_port,
        &dir.path().join("serve.log"),
    );
    wait_ready(&mut server);
    let port = server.resp_port;

    // A handful of commands, one redis-cli process each, as a shell user would.
    assert_eq!(cli(port, &["PING"]), "PONG");
    assert_eq!(cli(port, &["INCR", "visits"]), "1");
    assert_eq!(cli(port, &["INCRBY", "visits", "41"]), "42");
    assert_eq!(cli(port, &["GET", "visits"]), "42");
    assert_eq!(cli(port, &["SADD", "tags", "red", "green", "blue"]), "3");
    assert_eq!(cli(port, &["SADD", "tags", "red"]), "0");
    let mut tags: Vec<String> = cli(port, &["SMEMBERS", "tags"])
        .lines()
        .map(String::from)
        .collect();
    tags.sort();
    assert_eq!(tags, ["blue", "green", "red"]);
    assert_eq!(cli(port, &["PFADD", "uniques", "a", "b", "c", "a"]), "1");
    assert_eq!(cli(port, &["PFADD", "uniques2", "c", "d"]), "1");
    assert_eq!(cli(port, &["PFCOUNT", "uniques"]), "3");
    assert_eq!(cli(port, &["PFCOUNT", "uniques", "uniques2"]), "4");
    // Errors are printed on stdout when it is not a terminal.
    assert_eq!(
        cli(port, &["SADD", "visits", "x"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert!(
        cli(port, &["NOSUCHCOMMAND"]).starts_with("ERR unknown command"),
        "unknown command"
    );
    assert_eq!(cli(port, &["GET", "visits"]), "42");
    // Several commands on one connection from stdin (redis-cli reads them line by line).
    let output = run_cli(port, &[], Some(b"INCR visits\nGET visits\nSCARD tags\n"));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "43\n43\n3\n");

    // Mass insertion: 100,000 RESP-encoded commands through `redis-cli --pipe`, mostly
    // INCRs over 1,000 counters, every tenth an SADD over 50 sets.
    let mut input = Vec::with_capacity(MASS_COMMANDS * 40);
    let mut counters: BTreeMap<usize, i64> = (0..MASS_COUNTERS).map(|k| (k, 0)).collect();
    let mut sets: BTreeMap<usize, usize> = BTreeMap::new();
    for i in 0..MASS_COMMANDS {
        if i % 10 == 9 {
            let s = i % MASS_SETS;
            encode(
                &mut input,
                &["SADD", &format!("mass:set:{s}"), &format!("m{i}")],
            );
            *sets.entry(s).or_insert(0) += 1;
        } else {
            // A third of them on 37 hot keys; some counters get none at all.
            let k = if i % 3 == 0 {
                i % 37
            } else {
                i * 7919 % MASS_COUNTERS
            };
            encode(&mut input, &["INCR", &format!("mass:k{k}")]);
            *counters.get_mut(&k).unwrap() += 1;
        }
    }
    let started = Instant::now();
    let output = run_cli(port, &["--pipe"], Some(&input));
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "redis-cli --pipe failed with {}: {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = format!("errors: 0, replies: {MASS_COMMANDS}");
    assert!(
        stdout.lines().any(|line| line.trim() == expected),
        "redis-cli --pipe summary should be {expected:?}:\n{stdout}"
    );
    eprintln!("redis-cli --pipe: {MASS_COMMANDS} commands in {elapsed:.2?}");

    // Every counter holds exactly the number of INCRs sent to it (one MGET for all).
    let keys: Vec<String> = (0..MASS_COUNTERS).map(|k| format!("mass:k{k}")).collect();
    let mut args: Vec<&str> = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    // One line per key, an empty line for a missing key.
    let values = cli_raw(port, &args);
    let values: Vec<&str> = values.lines().collect();
    assert_eq!(values.len(), MASS_COUNTERS, "MGET answered {values:?}");
    for (k, value) in values.iter().enumerate() {
        let want = counters[&k];
        if want == 0 {
            assert_eq!(*value, "", "mass:k{k} was never incremented");
        } else {
            assert_eq!(*value, want.to_string(), "mass:k{k}");
        }
    }
    assert!(
        counters.values().any(|&n| n == 0) && counters.values().any(|&n| n > 500),
        "the model has untouched and hot counters"
    );
    // And a few through GET, as the brief's user would check them.
    for k in [0, 1, 500, 999] {
        let want = counters[&k];
        let got = cli(port, &["GET", &format!("mass:k{k}")]);
        assert_eq!(
            got,
            if want == 0 {
                String::new()
            } else {
                want.to_string()
            }
        );
    }
    for (s, n) in &sets {
        assert_eq!(
            cli(port, &["SCARD", &format!("mass:set:{s}")]),
            n.to_string(),
            "mass:set:{s}"
        );
    }
    // The keys written before the mass insertion are untouched.
    assert_eq!(cli(port, &["GET", "visits"]), "43");

    // Everything redis-cli got a reply for is durable: SIGKILL, restart, same answers
    // (the restart replays the update log written since the last checkpoint).
    server.kill();
    let mut server = Server::spawn(
        &dir.path().join("data"),
        http_port,
        resp_port,
        &dir.path().join("serve.log"),
    );
    wait_ready(&mut server);
    assert_eq!(cli_raw(port, &args), cli_raw_expected(&counters));
    assert_eq!(cli(port, &["GET", "visits"]), "43");
    for (s, n) in &sets {
        assert_eq!(
            cli(port, &["SCARD", &format!("mass:set:{s}")]),
            n.to_string()
        );
    }
    drop(server);
}

/// What `MGET` of every mass counter prints: one line per key, empty when never written.
fn cli_raw_expected(counters: &BTreeMap<usize, i64>) -> String {
    counters
        .values()
        .map(|&n| {
            if n == 0 {
                "\n".to_string()
            } else {
                format!("{n}\n")
            }
        })
        .collect()
}

#[test]
fn redis_cli_retries_with_an_id_count_once() {
    require_redis_cli();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_listening(dir.path());
    let port = server.resp_port;
    // Commands read from stdin go over one connection: the ID names the INCRBY after it.
    // Sent twice (a retry after a lost reply), it counts once; the next seq counts.
    let send = |seq: &str| {
        let input = format!("ID shop-1 {seq}\nINCRBY sales 5\n");
        let output = run_cli(port, &[], Some(input.as_bytes()));
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(send("1"), "OK\n5\n");
    assert_eq!(send("1"), "OK\n5\n");
    assert_eq!(send("2"), "OK\n10\n");
    assert_eq!(cli(port, &["GET", "sales"]), "10");
    server.assert_running();
}
