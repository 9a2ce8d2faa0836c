//! A real `nats-server -js` child for tests, a minimal blocking NATS client (publishing
//! with JetStream acks, JetStream API requests) written against the text protocol so
//! the tests need no client crate.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The Debian package's binary (installed by `.ci/run`).
pub const NATS_SERVER: &str = "nats-server";

/// A `nats-server -js` child on a free port, storing in a given directory. Killed
/// (SIGKILL) and reaped on drop; prints its log when the test fails.
pub struct NatsServer {
    child: Option<Child>,
    log: PathBuf,
    /// Client port.
    pub port: u16,
}

impl NatsServer {
    /// Starts the server on a free port and waits until it accepts connections.
    pub fn start(store_dir: &Path, log: &Path) -> NatsServer {
        NatsServer::start_on(super::free_ports().0, store_dir, log)
    }

    /// Starts the server on `port` (e.g. again after [`NatsServer::stop`]), appending
    /// to `log`.
    pub fn start_on(port: u16, store_dir: &Path, log: &Path) -> NatsServer {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("nats log file");
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning nats-server (apt-get install nats-server)");
        let server = NatsServer {
            child: Some(child),
            log: log.to_path_buf(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Stops the server with SIGTERM (it flushes its store) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::signal("-TERM", child.id());
            let _ = child.wait();
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- nats-server log ----\n{text}\n---- end of log ----");
        }
    }
}

/// A blocking NATS client: enough of the text protocol (INFO, CONNECT, PING/PONG, SUB,
/// UNSUB, PUB, MSG) for JetStream publishes with acks and API requests.
pub struct NatsClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    next_sid: u64,
}

/// One received `MSG`.
struct Msg {
    subject: String,
    sid: u64,
    reply: Option<String>,
    payload: Vec<u8>,
}

impl NatsClient {
    /// Connects and completes the handshake.
    pub fn connect(port: u16) -> NatsClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = NatsClient {
            writer: stream.try_clone().expect("clone socket"),
            reader: BufReader::new(stream),
            next_sid: 1,
        };
        let info = client.line();
        assert!(info.starts_with("INFO "), "expected INFO, got {info}");
        client.send(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"speedlayer-test\",\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}\r\nPING\r\n",
        );
        loop {
            let line = client.line();
            match line.as_str() {
                "PONG" => break,
                l if l.starts_with("-ERR") => panic!("nats refused the connection: {l}"),
                _ => {}
            }
        }
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to nats");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read from nats");
        assert!(n > 0, "nats closed the connection");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    /// The next `MSG`, answering server PINGs on the way.
    fn next_msg(&mut self) -> Msg {
        loop {
            let line = self.line();
            if line == "PING" {
                self.send(b"PONG\r\n");
                continue;
            }
            if line == "PONG" || line == "+OK" || line.starts_with("INFO ") {
                continue;
            }
            assert!(!line.starts_with("-ERR"), "nats error: {line}");
            let parts: Vec<&str> = line.split(' ').collect();
            assert!(parts[0] == "MSG", "unexpected from nats: {line}");
            let len: usize = parts[parts.len() - 1].parse().expect("MSG length");
            let mut payload = vec![0; len + 2];
            self.reader.read_exact(&mut payload).expect("MSG payload");
            payload.truncate(len);
            return Msg {
                subject: parts[1].to_string(),
                sid: parts[2].parse().expect("sid"),
                reply: (parts.len() == 5).then(|| parts[3].to_string()),
                payload,
            };
        }
    }

    fn subscribe(&mut self, subject: &str) -> u64 {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes());
        sid
    }

    /// A request (e.g. to the JetStream API); returns the reply parsed as JSON.
    pub fn request(&mut self, subject: &str, payload: &Value) -> Value {
        let inbox = format!("_INBOX.req.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        let body = payload.to_string();
        self.send(
            format!(
                "UNSUB {sid} 1\r\nPUB {subject} {inbox} {}\r\n{body}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let msg = self.next_msg();
        assert_eq!(msg.sid, sid, "reply to another subscription");
        serde_json::from_slice(&msg.payload).expect("JSON reply")
    }

    /// Creates a file-backed, limits-retention stream over `subjects`.
    pub fn create_stream(&mut self, name: &str, subjects: &[&str]) {
        let reply = self.request(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &serde_json::json!({
                "name": name, "subjects": subjects, "retention": "limits",
                "storage": "file", "num_replicas": 1,
            }),
        );
        assert!(reply.get("error").is_none(), "stream create: {reply}");
    }

    /// Deletes a consumer (an operator forcing a replay of the stream).
    pub fn delete_consumer(&mut self, stream: &str, consumer: &str) {
        let reply = self.request(
            &format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
            &serde_json::json!({}),
        );
        assert_eq!(reply["success"], true, "consumer delete: {reply}");
    }

    /// A consumer's info (`delivered`, `ack_floor`, `num_ack_pending`, …).
    pub fn consumer_info(&mut self, stream: &str, consumer: &str) -> Value {
        self.request(
            &format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
            &serde_json::json!({}),
        )
    }

    /// Pulls `n` messages from a pull consumer and never acknowledges them (what a
    /// consumer that crashed mid-batch leaves behind); returns their stream sequences.
    pub fn pull_without_ack(&mut self, stream: &str, consumer: &str, n: usize) -> Vec<u64> {
        let inbox = format!("_INBOX.pull.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        let body = serde_json::json!({"batch": n, "no_wait": true}).to_string();
        self.send(
            format!(
                "UNSUB {sid} {n}\r\nPUB $JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer} {inbox} {}\r\n{body}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        (0..n)
            .map(|_| {
                let msg = self.next_msg();
                assert_eq!(msg.sid, sid);
                // $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
                let reply = msg.reply.expect("a JetStream message has an ack subject");
                reply
                    .split('.')
                    .nth(5)
                    .and_then(|s| s.parse().ok())
                    .expect("stream seq")
            })
            .collect()
    }

    /// Publishes every `(subject, payload)` to JetStream, pipelined, and waits for every
    /// publish ack; returns the stream sequences in order.
    pub fn publish_all(&mut self, messages: &[(String, Vec<u8>)]) -> Vec<u64> {
        let sid = self.subscribe("_INBOX.pub.*");
        let mut seqs = vec![0u64; messages.len()];
        // Windows of a few thousand keep the socket buffers from filling both ways.
        for (w, window) in messages.chunks(2000).enumerate() {
            let mut out = Vec::new();
            for (i, (subject, payload)) in window.iter().enumerate() {
                let index = w * 2000 + i;
                out.extend_from_slice(
                    format!("PUB {subject} _INBOX.pub.{index} {}\r\n", payload.len()).as_bytes(),
                );
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
            self.send(&out);
            for _ in 0..window.len() {
                let msg = self.next_msg();
                assert_eq!(msg.sid, sid);
                let index: usize = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .expect("ack inbox index");
                let ack: Value = serde_json::from_slice(&msg.payload).expect("publish ack");
                assert!(ack.get("error").is_none(), "publish refused: {ack}");
                seqs[index] = ack["seq"].as_u64().expect("ack seq");
            }
        }
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
        seqs
    }
}
