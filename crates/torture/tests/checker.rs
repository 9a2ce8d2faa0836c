//! The checker catches each kind of broken promise in a small made-up history, and
//! passes the same history when the promise holds: a property that cannot fail would
//! pass here both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use speedlayer_torture::checker::check;
use speedlayer_torture::history::{Op, ProducerId, Proto, Record};

/// A small history under construction.
#[derive(Default)]
struct H {
    records: Vec<Record>,
    t: u64,
}

impl H {
    fn new() -> H {
        let mut h = H::default();
        h.push(|t| Record::Setup {
            t,
            nodes: 3,
            replicas: 3,
            scenario: String::new(),
            broken: vec![],
        });
        h
    }

    fn push(&mut self, f: impl FnOnce(u64) -> Record) {
        self.t += 10;
        self.records.push(f(self.t));
    }

    /// Invoke, then end with `outcome` ("ok", "fail", "timeout").
    fn attempt(
        &mut self,
        op_id: u64,
        attempt: u32,
        node: usize,
        quorum: &str,
        op: Op,
        outcome: &str,
    ) {
        let client = "c0w0".to_string();
        self.push(|t| Record::Invoke {
            t,
            client: client.clone(),
            op_id,
            attempt,
            node,
            proto: Proto::Http,
            consistency: "quorum".into(),
            quorum: quorum.into(),
            op,
        });
        self.push(|t| match outcome {
            "ok" => Record::Ok {
                t,
                client,
                op_id,
                attempt,
            },
            "fail" => Record::Fail {
                t,
                client,
                op_id,
                attempt,
                status: 503,
                error: "unavailable".into(),
            },
            _ => Record::Timeout {
                t,
                client,
                op_id,
                attempt,
            },
        });
    }

    /// An acknowledged attempt through `node` at `consistency` that took `took_us`.
    fn timed(&mut self, op_id: u64, node: usize, consistency: &str, took_us: u64) {
        let client = "c0w0".to_string();
        self.push(|t| Record::Invoke {
            t,
            client: client.clone(),
            op_id,
            attempt: 1,
            node,
            proto: Proto::Http,
            consistency: consistency.into(),
            quorum: "sloppy".into(),
            op: incr("k", 1, op_id),
        });
        self.t += took_us;
        self.push(|t| Record::Ok {
            t,
            client,
            op_id,
            attempt: 1,
        });
    }

    fn finals(&mut self, view: &str, key: &str, values: [Value; 3]) {
        for (node, value) in values.into_iter().enumerate() {
            self.push(|t| Record::Final {
                t,
                view: view.into(),
                key: key.into(),
                node,
                consistency: "local".into(),
                value,
            });
        }
    }

    fn fault(&mut self, step: &str, reach: Vec<Vec<Option<bool>>>) {
        self.push(|t| Record::Fault {
            t,
            cycle: 1,
            step: step.into(),
            reach,
            alive: vec![true; 3],
        });
    }

    fn verdict(&self, property: &str) -> (bool, String) {
        let report = check(&self.records);
        let v = report.verdict(property).unwrap();
        (v.ok, v.detail.clone())
    }
}

fn incr(key: &str, by: i64, seq: u64) -> Op {
    Op::Incr {
        key: key.into(),
        by,
        id: Some(ProducerId {
            writer: "c0w0".into(),
            seq,
        }),
    }
}

#[test]
fn counters_lost_and_double_counted_are_caught() {
    let mut h = H::new();
    h.attempt(1, 1, 0, "sloppy", incr("k0", 2, 1), "ok");
    // Timed out, retried through another node with the same id, acknowledged: one logical
    // increment of 3.
    h.attempt(2, 1, 0, "sloppy", incr("k0", 3, 2), "timeout");
    h.attempt(2, 2, 1, "sloppy", incr("k0", 3, 2), "ok");
    // Failed and never retried: may or may not count.
    h.attempt(3, 1, 0, "sloppy", incr("k0", 10, 3), "fail");
    let exact = |v: i64| {
        let mut h2 = H {
            records: h.records.clone(),
            t: h.t,
        };
        h2.finals("t_counter", "k0", [json!(v), json!(v), json!(v)]);
        h2.verdict("counters exact")
    };
    assert!(exact(5).0, "{:?}", exact(5));
    assert!(exact(15).0, "the failed one may have been applied");
    let (ok, detail) = exact(4);
    assert!(!ok && detail.contains("LOST"), "{detail}");
    let (ok, detail) = exact(8);
    assert!(
        ok,
        "8 = 2 + 3 + 3? no: within [5, 15], a bound cannot tell: {detail}"
    );
    let (ok, detail) = exact(16);
    assert!(!ok && detail.contains("DOUBLE COUNTED"), "{detail}");
}

#[test]
fn a_lost_set_add_and_an_invented_member_are_caught() {
    let add = |m: &str| Op::Add {
        key: "s0".into(),
        member: m.into(),
    };
    let mut h = H::new();
    h.attempt(1, 1, 0, "sloppy", add("x"), "ok");
    h.attempt(2, 1, 0, "sloppy", add("y"), "ok");
    h.attempt(
        3,
        1,
        0,
        "sloppy",
        Op::Remove {
            key: "s0".into(),
            member: "y".into(),
        },
        "ok",
    );
    h.attempt(4, 1, 0, "sloppy", add("z"), "timeout");
    let mut good = H {
        records: h.records.clone(),
        t: h.t,
    };
    good.finals(
        "t_set",
        "s0",
        [json!(["x"]), json!(["x", "z"]), json!(["x", "y"])],
    );
    assert!(
        good.verdict("set adds kept").0,
        "{:?}",
        good.verdict("set adds kept")
    );
    let mut lost = H {
        records: h.records.clone(),
        t: h.t,
    };
    lost.finals("t_set", "s0", [json!(["x"]), json!(["z"]), json!(["x"])]);
    let (ok, detail) = lost.verdict("set adds kept");
    assert!(!ok && detail.contains("LOST"), "{detail}");
    h.finals(
        "t_set",
        "s0",
        [json!(["x"]), json!(["x", "w"]), json!(["x"])],
    );
    let (ok, detail) = h.verdict("set adds kept");
    assert!(!ok && detail.contains("nobody added"), "{detail}");
}

#[test]
fn hll_max_and_register_answers_outside_their_bounds_are_caught() {
    let mut h = H::new();
    for i in 0..100 {
        h.attempt(
            i,
            1,
            0,
            "sloppy",
            Op::PfAdd {
                key: "h0".into(),
                member: format!("m{i}"),
            },
            "ok",
        );
    }
    h.attempt(
        200,
        1,
        0,
        "sloppy",
        Op::Max {
            key: "m0".into(),
            value: 7,
        },
        "ok",
    );
    h.attempt(
        201,
        1,
        0,
        "sloppy",
        Op::Max {
            key: "m0".into(),
            value: 9,
        },
        "fail",
    );
    h.attempt(
        300,
        1,
        0,
        "sloppy",
        Op::Set {
            key: "g0".into(),
            value: "v1".into(),
        },
        "ok",
    );
    let with = |hll: i64, max: i64, reg: &str| {
        let mut h2 = H {
            records: h.records.clone(),
            t: h.t,
        };
        h2.finals("t_hll", "h0", [json!(hll), json!(100), json!(100)]);
        h2.finals("t_max", "m0", [json!(max), json!(7), json!(7)]);
        h2.finals("t_reg", "g0", [json!(reg), json!("v1"), json!("v1")]);
        let report = check(&h2.records);
        (
            report.verdict("distinct within bound").unwrap().ok,
            report.verdict("max exact").unwrap().ok,
            report.verdict("register written").unwrap().ok,
        )
    };
    assert_eq!(with(101, 9, "v1"), (true, true, true));
    assert_eq!(with(90, 9, "v1"), (false, true, true));
    assert_eq!(with(100, 6, "v1"), (true, false, true));
    assert_eq!(with(100, 10, "v1"), (true, false, true));
    assert_eq!(with(100, 7, "v2"), (true, true, false));
}

#[test]
fn a_strict_write_acknowledged_without_its_quorum_is_caught() {
    let cut_a = vec![
        vec![Some(true), Some(false), Some(false)],
        vec![Some(false), Some(true), Some(true)],
        vec![Some(false), Some(true), Some(true)],
    ];
    let healthy = vec![vec![Some(true); 3]; 3];
    let mut h = H::new();
    h.fault("Partition([a],[b,c])", cut_a);
    // Through b (which reaches c): fine. Refused through a: fine.
    h.attempt(1, 1, 1, "strict", incr("k0", 1, 1), "ok");
    h.attempt(2, 1, 0, "strict", incr("k0", 1, 2), "fail");
    // Sloppy through a may be acknowledged by its definition.
    h.attempt(3, 1, 0, "sloppy", incr("k0", 1, 3), "ok");
    assert!(h.verdict("strict writes refused").0);
    // Strict through a, acknowledged while a reached only itself: broken.
    let mut broken = H {
        records: h.records.clone(),
        t: h.t,
    };
    broken.attempt(4, 1, 0, "strict", incr("k0", 1, 4), "ok");
    let (ok, detail) = broken.verdict("strict writes refused");
    assert!(!ok && detail.contains("reached 1 of the 2"), "{detail}");
    // The same write, if the heal came while it was in flight, may be acknowledged.
    h.push(|t| Record::Invoke {
        t,
        client: "c0w0".into(),
        op_id: 5,
        attempt: 1,
        node: 0,
        proto: Proto::Http,
        consistency: "quorum".into(),
        quorum: "strict".into(),
        op: incr("k0", 1, 5),
    });
    h.fault("Heal", healthy);
    h.push(|t| Record::Ok {
        t,
        client: "c0w0".into(),
        op_id: 5,
        attempt: 1,
    });
    assert!(h.verdict("strict writes refused").0);
}

#[test]
fn replicas_that_disagree_are_caught() {
    let mut h = H::new();
    h.push(|t| Record::Converged {
        t,
        cycle: 1,
        after_ms: 40,
    });
    let mut good = H {
        records: h.records.clone(),
        t: h.t,
    };
    good.finals(
        "t_set",
        "s0",
        [json!(["a", "b"]), json!(["b", "a"]), json!(["a", "b"])],
    );
    assert!(
        good.verdict("converged").0,
        "{:?}",
        good.verdict("converged")
    );
    let mut differ = H {
        records: h.records.clone(),
        t: h.t,
    };
    differ.finals("t_counter", "k0", [json!(1), json!(1), json!(2)]);
    assert!(!differ.verdict("converged").0);
    h.push(|t| Record::NotConverged {
        t,
        cycle: 2,
        waited_ms: 60_000,
        detail: "t_counter/k0: a=1 b=2".into(),
    });
    let (ok, detail) = h.verdict("converged");
    assert!(!ok && detail.contains("cycle 2"), "{detail}");
}

#[test]
fn writes_while_a_peer_hangs_are_measured_apart_from_the_paused_nodes_own() {
    let mut h = H::new();
    let all = vec![vec![Some(true); 3]; 3];
    h.fault("Pause(b)", all.clone());
    h.timed(1, 0, "quorum", 5_000);
    h.timed(2, 2, "all", 2_000_000);
    // Sent to the paused node itself: answered once it resumed.
    h.timed(3, 1, "quorum", 3_000_000);
    h.fault("Resume(b)", all);
    let report = check(&h.records);
    assert_eq!(report.slowest_write_while_hung_ms, Some(3000));
    let past: Vec<(&str, u64)> = report
        .slowest_write_past_hung_ms
        .iter()
        .map(|(c, ms)| (c.as_str(), *ms))
        .collect();
    assert_eq!(past, [("all", 2000), ("quorum", 5)]);
    assert!(report
        .to_string()
        .contains("through another node while a peer hung: all 2000 ms, quorum 5 ms"));
}
