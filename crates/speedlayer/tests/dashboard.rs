//! The dashboard in a real browser: Debian's Chromium, headless, loads `GET /` of a live
//! 3-node cluster (real `speedlayer serve` processes) and the test reads the page back
//! from the DOM Chromium dumps after the page's script has run (`--dump-dom` with a
//! virtual time budget). The page marks what it drew in data attributes: the chart's
//! points, each member's state, its refresh and script-error counts.
//!
//! Needs `chromium` on the PATH (`.ci/run` installs Debian's package); fails without it.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};

mod support;

use support::cluster::{Cluster, ClusterOptions};

/// How long the page's script may run in each load (virtual time: fetches still take
/// real time, and the budget pauses while they are pending).
const BUDGET_MS: &str = "5000";

/// What one page load showed.
#[derive(Debug)]
struct Page {
    dom: String,
    console: String,
}

impl Page {
    /// The value of the first `name="..."` attribute after `anchor` (HTML entities of
    /// quotes undone).
    fn attr_after(&self, anchor: &str, name: &str) -> Option<String> {
        let from = self.dom.find(anchor)?;
        let rest = &self.dom[from..];
        let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
        let end = rest[start..].find('"')? + start;
        Some(
            rest[start..end]
                .replace("&quot;", "\"")
                .replace("&amp;", "&"),
        )
    }

    /// The body's counter `data-{name}`.
    fn count(&self, name: &str) -> u64 {
        self.attr_after("<body", &format!("data-{name}"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no data-{name} on <body>: {}", self.excerpt()))
    }

    /// The chart's points: (clustering, value, source) per row.
    fn chart(&self) -> Vec<(String, Option<i64>, String)> {
        let points = self
            .attr_after("id=\"chart\"", "data-points")
            .unwrap_or_else(|| panic!("the chart has no data-points: {}", self.excerpt()));
        let rows: Vec<Value> = serde_json::from_str(&points).expect("chart points are JSON");
        rows.iter()
            .map(|row| {
                (
                    row[0].as_str().unwrap_or_default().to_string(),
                    row[1].as_i64(),
                    row[2].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The state the members table shows for the node at cluster address `addr`.
    fn member_state(&self, addr: &str) -> Option<String> {
        self.attr_after(&format!("data-addr=\"{addr}\""), "data-state")
    }

    /// The page loaded, refreshed at least once and raised no script error.
    fn assert_clean(&self) {
        let errors = self.count("errors");
        assert_eq!(errors, 0, "script errors on the page: {}", self.excerpt());
        assert!(
            self.count("refreshes") >= 1,
            "the page never finished a refresh: {}",
            self.excerpt()
        );
        assert!(
            !self.console.contains("Uncaught"),
            "an uncaught exception in the console:\n{}",
            self.console
        );
    }

    fn excerpt(&self) -> String {
        let errors = self
            .dom
            .find("id=\"errors\"")
            .map(|i| &self.dom[i..(i + 600).min(self.dom.len())])
            .unwrap_or("");
        format!("errors list: {errors}\nconsole:\n{}", self.console)
    }
}

/// Chromium's command line for headless runs as root on a closed network (no sandbox,
/// no GPU, none of the background connections it would otherwise try).
fn chromium(profile: &std::path::Path) -> Command {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Loads `url` and returns the DOM after the page's script ran, with the console.
fn load(url: &str) -> Page {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = chromium(profile.path())
        .args([
            &format!("--virtual-time-budget={BUDGET_MS}"),
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("running chromium (apt-get install chromium; .ci/run does)");
    let console = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "chromium --dump-dom {url} failed: {}\n{console}",
        output.status
    );
    Page {
        dom: String::from_utf8_lossy(&output.stdout).into_owned(),
        console,
    }
}

/// Saves a screenshot of `url` to `path`.
fn screenshot(url: &str, path: &std::path::Path) {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = chromium(profile.path())
        .args([
            &format!("--virtual-time-budget={BUDGET_MS}"),
            "--window-size=1280,1150",
            &format!("--screenshot={}", path.display()),
            url,
        ])
        .output()
        .expect("running chromium");
    assert!(
        output.status.success() && path.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Increments `/a` at clustering `rt` by `by` through node `i` (event time now, after
/// the batch boundary).
async fn increment(cluster: &Cluster, i: usize, by: i64) {
    let update =
        json!({ "key": "/a", "clustering": "rt", "op": "incr", "by": by, "ts": now_secs() });
    cluster.update_ok(i, "pageviews", &update, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_a_view_live_and_shows_a_killed_node_down() {
    let mut cluster = Cluster::start_ready(ClusterOptions::new(3)).await;
    cluster
        .declare_spec(
            "pageviews",
            &json!({ "type": "counter", "epoch_secs": 3600 }),
        )
        .await;
    // The batch layer's view of the time before this hour: two rows of /a.
    let boundary = now_secs() / 3600 * 3600;
    let response = cluster
        .client
        .post(format!(
            "{}/v1/views/pageviews/batch?covers_until={boundary}",
            cluster.base(1)
        ))
        .body("{\"key\":\"/a\",\"clustering\":\"b1\",\"value\":40}\n{\"key\":\"/a\",\"clustering\":\"b2\",\"value\":50}\n")
        .send()
        .await
        .expect("import");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    increment(&cluster, 0, 7).await;

    let url = format!("{}/?view=pageviews&key=/a", cluster.base(0));
    let first = load(&url);
    first.assert_clean();
    let batch = |v: i64, c: &str| (c.to_string(), Some(v), "batch".to_string());
    let realtime = |v: i64| ("rt".to_string(), Some(v), "realtime".to_string());
    assert_eq!(
        first.chart(),
        vec![batch(40, "b1"), batch(50, "b2"), realtime(7)],
        "the chart of /a: batch rows before T, realtime after"
    );
    assert!(
        first.dom.contains("class=\"boundary\""),
        "the batch boundary T is not marked on the chart"
    );
    assert!(
        first.dom.contains("data-view=\"pageviews\""),
        "the views table does not list pageviews"
    );
    for i in 0..3 {
        assert_eq!(
            first.member_state(&cluster.addr(i)).as_deref(),
            Some("up"),
            "member {} on the page",
            cluster.addr(i)
        );
    }

    // Events keep arriving (through another node): the chart follows.
    increment(&cluster, 1, 5).await;
    increment(&cluster, 2, 1).await;
    let second = load(&url);
    second.assert_clean();
    assert_eq!(
        second.chart(),
        vec![batch(40, "b1"), batch(50, "b2"), realtime(13)],
        "the chart after 6 more increments"
    );

    // A node killed: once the node serving the page sees it down, so does the page.
    cluster.kill(2);
    cluster
        .wait_for_states(&[0], &[2], "down", Duration::from_secs(15))
        .await;
    let third = load(&url);
    third.assert_clean();
    assert_eq!(
        third.member_state(&cluster.addr(2)).as_deref(),
        Some("down"),
        "the killed node on the page"
    );
    assert_eq!(third.member_state(&cluster.addr(1)).as_deref(), Some("up"));
    // Reads still answer at quorum with one of three down.
    assert_eq!(third.chart().last(), Some(&realtime(13)));

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    screenshot(&url, &shot);
    eprintln!("screenshot of the dashboard: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_requirepass_the_page_asks_for_the_password_and_serves_no_data_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, resp_port) = support::free_ports();
    let mut server = support::Server::spawn_with(
        &dir.path().join("data"),
        http_port,
        resp_port,
        &dir.path().join("serve.log"),
        &["--requirepass".to_string(), "s3cret".to_string()],
    );
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    // The page itself holds no data and is served to anyone; the API is not.
    let page = client.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(page.status(), StatusCode::OK);
    let views = client
        .get(format!("{base}/v1/views"))
        .send()
        .await
        .expect("GET /v1/views");
    assert_eq!(views.status(), StatusCode::UNAUTHORIZED);
    let declared = client
        .put(format!("{base}/v1/views/secret_counts"))
        .bearer_auth("s3cret")
        .json(&json!({ "type": "counter" }))
        .send()
        .await
        .expect("declare");
    assert!(
        declared.status().is_success(),
        "{:?}",
        declared.text().await
    );

    let without = load(&format!("{base}/"));
    assert!(
        without.dom.contains("<form id=\"login\">"),
        "the password form is not shown without a password"
    );
    assert!(
        !without.dom.contains("secret_counts"),
        "a view's name reached the page without the password"
    );
    let with = load(&format!("{base}/#token=s3cret"));
    with.assert_clean();
    assert!(
        with.dom.contains("<form id=\"login\" hidden=\"\">"),
        "the password form is still shown with the right password"
    );
    assert!(
        with.dom.contains("data-view=\"secret_counts\""),
        "the views table is empty with the right password"
    );
    server.assert_running();
}

/// `speedlayer demo` serves the dashboard from its own port: the page stays up while a
/// node is stopped from it, shows that node down (and a button to start it), and the node
/// comes back up when started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_stops_and_starts_a_node() {
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(support::BIN)
        .args(["demo", "--duration", "120", "--rate", "2000"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning speedlayer demo");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("demo stdout") {
            if let Some(url) = line.split("open the dashboard at ").nth(1) {
                return url.trim().to_string();
            }
        }
        panic!("the demo ended without printing the dashboard's address");
    })
    .await
    .expect("the demo printed no dashboard address within 60 s");
    // Keep reading the demo's output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = url.split("/?").next().expect("base").to_string();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("{base}{path}"));
        async move {
            let answer = request.send().await.expect("GET");
            assert_eq!(answer.status(), StatusCode::OK);
            answer.json::<Value>().await.expect("JSON")
        }
    };
    let nodes = get("/demo/nodes").await;
    let n2 = nodes["nodes"][2].clone();
    assert_eq!(n2["running"], json!(true), "{nodes}");
    let n2_addr = n2["cluster"].as_str().expect("cluster address").to_string();

    let stopped = client
        .post(format!("{base}/demo/nodes/2/stop"))
        .send()
        .await
        .expect("stop");
    assert_eq!(stopped.status(), StatusCode::OK);
    // Waits (at most 20 s) until the node the demo's port forwards to sees n2 in `wanted`.
    let wait_n2 = |wanted: &'static str| {
        let get = &get;
        let n2_addr = n2_addr.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let cluster = get("/v1/cluster").await;
                let seen = cluster["nodes"]
                    .as_array()
                    .and_then(|nodes| nodes.iter().find(|n| n["addr"] == json!(n2_addr)))
                    .map(|n| n["state"].clone());
                if seen == Some(json!(wanted)) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "n2 not seen {wanted} within 20 s: {seen:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_n2("down").await;
    let page = load(&url);
    page.assert_clean();
    assert_eq!(page.member_state(&n2_addr).as_deref(), Some("down"));
    assert!(
        page.dom.contains(">start n2</button>"),
        "no start button for n2"
    );
    assert!(
        !page.chart().is_empty(),
        "the pageviews chart of / is empty during the demo"
    );

    let started = client
        .post(format!("{base}/demo/nodes/2/start"))
        .send()
        .await
        .expect("start");
    assert_eq!(
        started.status(),
        StatusCode::OK,
        "{:?}",
        started.text().await
    );
    wait_n2("up").await;
    assert!(
        child.try_wait().expect("demo status").is_none(),
        "the demo ended early"
    );
}
