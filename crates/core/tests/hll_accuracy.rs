//! HyperLogLog accuracy over the whole range: the estimator must be usable at
//! small cardinalities (no linear-counting switch) and at large ones, and a
//! merge must estimate the union.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use speedlayer_core::{Hll, Value};

fn sketch(range: std::ops::Range<u64>) -> Hll {
    let mut h = Hll::default();
    for i in range {
        h.add(format!("visitor-{i}").as_bytes());
    }
    h
}

fn relative_error(estimate: u64, truth: u64) -> f64 {
    (estimate as f64 - truth as f64).abs() / truth as f64
}

#[test]
fn one_million_distinct_items_within_two_percent() {
    let h = sketch(0..1_000_000);
    let err = relative_error(h.count(), 1_000_000);
    assert!(
        err < 0.02,
        "estimate {} is {:.3}% off",
        h.count(),
        err * 100.0
    );
}

#[test]
fn small_cardinalities_are_close() {
    for n in [1u64, 10, 100, 1_000, 10_000, 100_000] {
        let h = sketch(0..n);
        let err = relative_error(h.count(), n);
        assert!(
            err < 0.05,
            "n={n}: estimate {} is {:.3}% off",
            h.count(),
            err * 100.0
        );
    }
}

#[test]
fn re_adding_members_does_not_change_the_estimate() {
    let mut h = sketch(0..5_000);
    let before = h.count();
    for i in 0..5_000u64 {
        assert!(!h.add(format!("visitor-{i}").as_bytes()));
    }
    assert_eq!(h.count(), before);
}

#[test]
fn merge_of_disjoint_halves_estimates_the_union() {
    let mut a = sketch(0..250_000);
    let b = sketch(250_000..500_000);
    let union = sketch(0..500_000);
    a.merge(&b);
    assert_eq!(a, union, "merge is exactly the sketch of the union");
    let err = relative_error(a.count(), 500_000);
    assert!(
        err < 0.02,
        "estimate {} is {:.3}% off",
        a.count(),
        err * 100.0
    );
    let encoded = Value::Hll(a.clone()).encode();
    assert_eq!(Value::decode(&encoded), Ok(Value::Hll(a)));
}
