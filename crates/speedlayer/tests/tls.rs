//! TLS on the client ports, seen by real clients: `redis-cli --tls` (Debian's
//! redis-tools, built with TLS) and Python's `ssl` + `http.client` for HTTPS, against a
//! real `speedlayer serve` with a certificate a test CA signed (made here with rcgen).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::pki::pki;
use support::redis_cli::{require_redis_cli, run_cli};
use support::{free_ports, Server, BIN};

/// `redis-cli -h 127.0.0.1 -p PORT args...` (stdin closed), whatever its exit status.
fn redis_cli(port: u16, args: &[&str]) -> Output {
    run_cli(port, args, None)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_string()
}

/// One HTTPS request from Python's `ssl` (trusting `ca`, presenting `cert` when given);
/// prints `status body` or `ERROR <exception>`.
fn python_https(
    port: u16,
    ca: Option<&str>,
    cert: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &str,
) -> String {
    let script = r#"
import http.client, ssl, sys
port, ca, cert, key, method, path, body = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca or None)
if cert:
    ctx.load_cert_chain(cert, key)
try:
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
    conn.request(method, path, body=body or None, headers={"content-type": "application/json"})
    r = conn.getresponse()
    print(r.status, r.read().decode())
except Exception as e:
    print("ERROR", type(e).__name__, e)
"#;
    let (cert, key) = cert.unwrap_or(("", ""));
    let output = Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            ca.unwrap_or(""),
            cert,
            key,
            method,
            path,
            body,
        ])
        .output()
        .expect("python3");
    text(&output)
}

/// Waits until the TLS Redis port answers PING through a client trusting `ca`.
fn wait_tls_ready(server: &mut Server, tls_args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.assert_running();
        let mut args = tls_args.to_vec();
        args.push("PING");
        if text(&redis_cli(server.resp_port, &args)) == "PONG" {
            return;
        }
        assert!(Instant::now() < deadline, "no PONG over TLS within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(dir: &Path, pki: &support::pki::Pki, extra: &[&str]) -> Server {
    let (http, resp) = free_ports();
    let mut args = vec![
        "--tls-cert".to_string(),
        pki.path("node.pem"),
        "--tls-key".to_string(),
        pki.path("node-key.pem"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::spawn_with(&dir.join("data"), http, resp, &dir.join("node.log"), &args)
}

#[test]
fn clients_that_trust_the_ca_are_served_over_tls_and_plain_text_is_refused() {
    require_redis_cli();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut server = start(dir.path(), &pki, &[]);
    let ca = pki.path("ca.pem");
    let trusted = ["--tls", "--cacert", ca.as_str()];
    wait_tls_ready(&mut server, &trusted);
    let port = server.resp_port;

    // redis-cli with the CA: a real session.
    let cli = |args: &[&str]| text(&redis_cli(port, &[&trusted[..], args].concat()));
    assert_eq!(cli(&["SET", "k", "v"]), "OK");
    assert_eq!(cli(&["GET", "k"]), "v");
    assert_eq!(cli(&["INCRBY", "c", "5"]), "5");

    // Without the CA, redis-cli refuses the node's certificate.
    let untrusting = text(&redis_cli(port, &["--tls", "PING"]));
    assert!(
        !untrusting.contains("PONG") && untrusting.to_lowercase().contains("certificate"),
        "{untrusting}"
    );
    // Plain text on the TLS port gets no answer: the node closes it.
    let plain = redis_cli(port, &["PING"]);
    assert!(!text(&plain).contains("PONG"), "{}", text(&plain));

    // HTTPS with the CA: reads and writes.
    let http = server.http_port;
    let health = python_https(http, Some(&ca), None, "GET", "/health", "");
    assert!(health.starts_with("200"), "{health}");
    let read = python_https(
        http,
        Some(&ca),
        None,
        "GET",
        "/v1/views/redis/get?key=c",
        "",
    );
    assert!(read.starts_with("200") && read.contains('5'), "{read}");
    // Without the CA: the client refuses the certificate.
    let untrusting = python_https(http, None, None, "GET", "/health", "");
    assert!(
        untrusting.contains("CERTIFICATE_VERIFY_FAILED"),
        "{untrusting}"
    );
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = Command::new("python3")
        .args([
            "-c",
            "import http.client,sys\ntry:\n c=http.client.HTTPConnection('127.0.0.1',int(sys.argv[1]),timeout=10); c.request('GET','/health'); print(c.getresponse().status)\nexcept Exception as e: print('ERROR', type(e).__name__)",
            &http.to_string(),
        ])
        .output()
        .unwrap();
    assert!(text(&plain).starts_with("ERROR"), "{}", text(&plain));
    server.assert_running();
}

#[test]
fn with_a_client_ca_only_clients_holding_a_certificate_it_signed_get_in() {
    require_redis_cli();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let ca = pki.path("ca.pem");
    let mut server = start(dir.path(), &pki, &["--tls-client-ca", &ca]);
    let (cert, key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let with_cert = ["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key];
    wait_tls_ready(&mut server, &with_cert);
    let port = server.resp_port;

    assert_eq!(
        text(&redis_cli(
            port,
            &[&with_cert[..], &["SET", "m", "1"]].concat()
        )),
        "OK"
    );
    // No client certificate: refused.
    let without = text(&redis_cli(
        port,
        &["--tls", "--cacert", &ca, "SET", "m", "2"],
    ));
    assert!(!without.contains("OK"), "{without}");
    // A certificate another CA signed: refused.
    let (rogue, rogue_key) = (
        pki.path("rogue-client.pem"),
        pki.path("rogue-client-key.pem"),
    );
    let rogue_args = [
        "--tls", "--cacert", &ca, "--cert", &rogue, "--key", &rogue_key,
    ];
    let rogue_out = text(&redis_cli(
        port,
        &[&rogue_args[..], &["SET", "m", "3"]].concat(),
    ));
    assert!(!rogue_out.contains("OK"), "{rogue_out}");
    assert_eq!(
        text(&redis_cli(port, &[&with_cert[..], &["GET", "m"]].concat())),
        "1"
    );

    // HTTPS likewise.
    let http = server.http_port;
    let ok = python_https(http, Some(&ca), Some((&cert, &key)), "GET", "/health", "");
    assert!(ok.starts_with("200"), "{ok}");
    let refused = python_https(http, Some(&ca), None, "GET", "/health", "");
    assert!(refused.starts_with("ERROR"), "{refused}");
    let rogue_http = python_https(
        http,
        Some(&ca),
        Some((&rogue, &rogue_key)),
        "GET",
        "/health",
        "",
    );
    assert!(rogue_http.starts_with("ERROR"), "{rogue_http}");
    server.assert_running();
}

#[test]
fn unusable_tls_material_stops_the_node_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let serve = |args: &[String]| {
        let (http, resp) = free_ports();
        Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--resp", &format!("127.0.0.1:{resp}")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("speedlayer serve")
    };
    let s = |v: &str| v.to_string();
    // A key that is not the certificate's.
    let mismatched = serve(&[
        s("--tls-cert"),
        pki.path("node.pem"),
        s("--tls-key"),
        pki.path("client-key.pem"),
    ]);
    assert!(!mismatched.status.success());
    let said = text(&mismatched);
    assert!(said.contains("TLS"), "{said}");
    assert!(!said.contains("stack backtrace"), "{said}");
    // A missing file.
    let missing = serve(&[
        s("--tls-cert"),
        pki.path("nowhere.pem"),
        s("--tls-key"),
        pki.path("node-key.pem"),
    ]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("nowhere.pem"), "{}", text(&missing));
    // A certificate without its key.
    let half = serve(&[s("--tls-cert"), pki.path("node.pem")]);
    assert!(!half.status.success());
    assert!(text(&half).contains("--tls-key"), "{}", text(&half));
}

#[test]
fn ctl_and_import_reach_a_node_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let mut server = start(dir.path(), &pki, &["--tls-client-ca", &ca]);
    let http = server.http_port;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !python_https(http, Some(&ca), Some((&cert, &key)), "GET", "/health", "")
        .starts_with("200")
    {
        server.assert_running();
        assert!(Instant::now() < deadline, "no HTTPS answer within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let declared = python_https(
        http,
        Some(&ca),
        Some((&cert, &key)),
        "PUT",
        "/v1/views/hits",
        r#"{"type":"counter","epoch_secs":3600}"#,
    );
    assert!(declared.starts_with("20"), "{declared}");
    let node = format!("127.0.0.1:{http}");
    let speedlayer = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("SPEEDLAYER_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("speedlayer")
    };
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];

    // ctl with the CA and a client certificate: the node answers over HTTPS.
    let status = speedlayer(&[&["ctl", "--node", &node][..], &tls, &["status"]].concat());
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("hits"), "{}", text(&status));
    // Without the client certificate the node refuses the handshake; without the CA,
    // plain HTTP gets no answer from a TLS port: both fail, saying so.
    let no_cert = speedlayer(&["ctl", "--node", &node, "--cacert", &ca, "status"]);
    assert!(!no_cert.status.success(), "{}", text(&no_cert));
    assert!(
        text(&no_cert).contains("cannot reach"),
        "{}",
        text(&no_cert)
    );
    let plain = speedlayer(&["ctl", "--node", &node, "status"]);
    assert!(!plain.status.success(), "{}", text(&plain));

    // import streams a batch over the same TLS client.
    let hour = support::batch::past_hour_start();
    let rows = dir.path().join("rows.ndjson");
    std::fs::write(&rows, "{\"key\":\"a\",\"clustering\":\"\",\"value\":5}\n").unwrap();
    let covers = hour.to_string();
    let imported = speedlayer(
        &[
            &[
                "import",
                "--view",
                "hits",
                "--covers-until",
                &covers,
                "--node",
                &node,
            ][..],
            &tls,
            &[rows.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(imported.status.success(), "{}", text(&imported));
    let read = python_https(
        http,
        Some(&ca),
        Some((&cert, &key)),
        "GET",
        "/v1/views/hits/get?key=a",
        "",
    );
    assert!(read.starts_with("200") && read.contains('5'), "{read}");
    // An unreadable CA file is a clear error before any request.
    let missing = speedlayer(&[
        "ctl",
        "--node",
        &node,
        "--cacert",
        "/nonexistent.pem",
        "status",
    ]);
    assert!(
        text(&missing).contains("--cacert /nonexistent.pem"),
        "{}",
        text(&missing)
    );
    server.assert_running();
}
