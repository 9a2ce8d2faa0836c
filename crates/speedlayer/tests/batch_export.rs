//! `speedlayer batch-export` end to end: the real binary reads generated event files and
//! its rows must equal what this test computes on its own, from the generator's records
//! rather than through the mapping code, for a counter (with ids, retries and every kind
//! of skipped line), an hll and a max view. Also: standard input and output, `@FILE`
//! declarations, and the errors a user meets.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// 2024-11-24T12:00:00Z.
const H12: i64 = 1_732_449_600;
/// The boundary: 2024-11-24T16:00:00Z. Events span 12:00 to 18:00.
const T: i64 = H12 + 4 * 3600;

/// One generated event, as the expectations see it.
#[derive(Clone, Debug)]
struct Ev {
    pageview: bool,
    url: Option<String>,
    visitor: String,
    user: String,
    /// Event time in half seconds (`ts * 2`), so fractional times stay exact; `None`: no `ts`.
    ts2: Option<i64>,
    id: Option<(String, u64)>,
}

impl Ev {
    fn line(&self) -> String {
        let mut e = json!({
            "type": if self.pageview { "pageview" } else { "click" },
            "visitor": self.visitor,
            "user": self.user,
        });
        if let Some(url) = &self.url {
            e["url"] = json!(url);
        }
        if let Some(ts2) = self.ts2 {
            e["ts"] = if ts2 % 2 == 0 {
                json!(ts2 / 2)
            } else {
                json!(ts2 as f64 / 2.0)
            };
        }
        if let Some((writer, seq)) = &self.id {
            e["id"] = json!({"writer": writer, "seq": seq});
        }
        e.to_string()
    }

    /// Whole seconds, when the event has a ts before the boundary.
    fn counted_secs(&self) -> Option<i64> {
        let ts2 = self.ts2?;
        (ts2 < 2 * T).then_some(ts2.div_euclid(2))
    }
}

fn hour(secs: i64) -> String {
    format!("2024-11-24T{:02}", 12 + (secs - H12) / 3600)
}

/// The events, in file order (retries included), and the malformed lines' positions.
fn generate() -> (Vec<Ev>, Vec<String>) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut events = Vec::new();
    let mut lines = Vec::new();
    for i in 0..3_000u64 {
        let r = next();
        let ev = Ev {
            pageview: i % 7 != 3,
            url: (i % 61 != 5).then(|| format!("/p{}", r % 5)),
            visitor: format!("v{}", next() % 40),
            user: format!("u{}", next() % 8),
            ts2: (i % 50 != 7).then(|| 2 * H12 + (next() % (6 * 3600 * 2)) as i64),
            id: (i % 3 == 0).then(|| (format!("w{}", i % 4), i)),
        };
        lines.push(ev.line());
        events.push(ev.clone());
        if i % 97 == 11 {
            lines.push("{oops".to_string());
        }
        if i % 10 == 0 && ev.id.is_some() {
            // A retry of an event with an id: counts once.
            lines.push(ev.line());
            events.push(ev);
        }
    }
    (events, lines)
}

fn expected_pageviews(events: &[Ev]) -> Vec<Value> {
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for ev in events {
        let (Some(secs), Some(url), true) = (ev.counted_secs(), &ev.url, ev.pageview) else {
            continue;
        };
        if let Some(id) = &ev.id {
            if !seen.insert(id.clone()) {
                continue;
            }
        }
        *counts.entry((url.clone(), hour(secs))).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((k, c), n)| json!({"key": k, "clustering": c, "value": n}))
        .collect()
}

fn expected_uniques(events: &[Ev]) -> Vec<Value> {
    let mut visitors: BTreeMap<(String, String), BTreeSet<&str>> = BTreeMap::new();
    for ev in events {
        let (Some(secs), Some(url), true) = (ev.counted_secs(), &ev.url, ev.pageview) else {
            continue;
        };
        visitors
            .entry((url.clone(), hour(secs)))
            .or_default()
            .insert(&ev.visitor);
    }
    visitors
        .into_iter()
        .map(|((k, c), v)| json!({"key": k, "clustering": c, "value": v.len()}))
        .collect()
}

fn expected_last_seen(events: &[Ev]) -> Vec<Value> {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for ev in events {
        if let Some(secs) = ev.counted_secs() {
            let at = last.entry(&ev.user).or_insert(secs);
            *at = (*at).max(secs);
        }
    }
    last.into_iter()
        .map(|(k, v)| json!({"key": k, "clustering": "", "value": v}))
        .collect()
}

const PAGEVIEWS: &str = r#"{"type":"counter","epoch_secs":3600,"mapping":{"filter":"type == \"pageview\"","key":"url","clustering":"hour(ts)","op":"incr 1"}}"#;
const UNIQUES: &str = r#"{"type":"hll","epoch_secs":3600,"mapping":{"filter":"type == \"pageview\"","key":"url","clustering":"hour(ts)","op":"pfadd visitor"}}"#;
const LAST_SEEN: &str = r#"{"name":"last_seen","type":"max","epoch_secs":86400,"mapping":{"key":"user","op":"max ts"}}"#;

fn speedlayer(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_speedlayer"))
        .args(args)
        .env_remove("SPEEDLAYER_REQUIREPASS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the speedlayer binary");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for speedlayer")
}

fn rows(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes the lines into two files, split in the middle.
fn write_files(dir: &Path, lines: &[String]) -> (String, String) {
    let (a, b) = lines.split_at(lines.len() / 2);
    let first = dir.join("events-1.ndjson");
    let second = dir.join("events-2.ndjson");
    std::fs::write(&first, a.join("\n") + "\n").expect("write events");
    std::fs::write(&second, b.join("\r\n")).expect("write events");
    (first.display().to_string(), second.display().to_string())
}

#[test]
fn rows_equal_an_independent_recomputation() {
    let (events, lines) = generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = write_files(dir.path(), &lines);
    let t = T.to_string();

    let out_path = dir.path().join("pageviews.ndjson");
    let out = out_path.display().to_string();
    let run = speedlayer(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            PAGEVIEWS,
            "--out",
            &out,
            &first,
            &second,
        ],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let written = std::fs::read_to_string(&out_path).expect("the output file");
    let expected = expected_pageviews(&events);
    assert!(expected.len() > 10);
    assert_eq!(rows(&written), expected);
    // The summary adds up: every line is counted, a duplicate, or skipped for a reason.
    let malformed = lines.iter().filter(|l| l.as_str() == "{oops").count();
    let no_ts = events.iter().filter(|e| e.ts2.is_none()).count();
    let summary = stderr(&run);
    assert!(
        summary.contains(&format!("{} event(s) read", lines.len())),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{no_ts} without ts")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{malformed} malformed")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("{} row(s) written to {out}", expected.len())),
        "{summary}"
    );
    assert!(
        summary.contains("warning: "),
        "malformed lines are named: {summary}"
    );
    let counted: i64 = expected
        .iter()
        .map(|r| r["value"].as_i64().unwrap_or(0))
        .sum();
    assert!(
        summary.contains(&format!(", {counted} counted,")),
        "{summary}"
    );

    // hll: exact distinct counts, declaration from a file, rows on standard output.
    let spec = dir.path().join("uniques.json");
    std::fs::write(&spec, UNIQUES).expect("write spec");
    let at_spec = format!("@{}", spec.display());
    let run = speedlayer(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            &at_spec,
            &first,
            &second,
        ],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        rows(&String::from_utf8_lossy(&run.stdout)),
        expected_uniques(&events)
    );

    // max ts per user from standard input, with a GET /v1/views answer as the spec.
    let run = speedlayer(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            LAST_SEEN,
            "-",
        ],
        Some(&(lines.join("\n") + "\n")),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        rows(&String::from_utf8_lossy(&run.stdout)),
        expected_last_seen(&events)
    );
}

#[test]
fn user_mistakes_fail_clearly_and_leave_no_partial_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, format!("{{\"url\":\"/a\",\"ts\":{H12}}}\n")).expect("write");
    let events = events.display().to_string();
    let out = dir.path().join("out.ndjson");
    let out_arg = out.display().to_string();
    let t = T.to_string();

    let fail = |args: &[&str], needle: &str| {
        let run = speedlayer(args, None);
        assert!(!run.status.success(), "{args:?} should fail");
        let text = stderr(&run);
        assert!(
            text.contains(needle),
            "{args:?}: expected '{needle}' in: {text}"
        );
    };
    let no_mapping = r#"{"type":"counter","epoch_secs":3600}"#;
    fail(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            no_mapping,
            &events,
        ],
        "no event mapping",
    );
    fail(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            "{nope",
            &events,
        ],
        "not JSON",
    );
    let bad_op = r#"{"type":"counter","mapping":{"key":"url","op":"pfadd url"}}"#;
    fail(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            bad_op,
            &events,
        ],
        "does not apply to a counter view",
    );
    fail(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            "@/nonexistent/spec.json",
            &events,
        ],
        "cannot read /nonexistent/spec.json",
    );
    let missing = dir.path().join("missing.ndjson").display().to_string();
    fail(
        &[
            "batch-export",
            "--covers-until",
            &t,
            "--view-spec",
            PAGEVIEWS,
            "--out",
            &out_arg,
            &events,
            &missing,
        ],
        "cannot open",
    );
    fail(
        &["batch-export", "--covers-until", &t, &events],
        "--view-spec",
    );
    // Nothing was left behind by the failed runs.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("events.ndjson")]);
}
