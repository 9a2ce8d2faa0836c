//! The batch arithmetic, type by type, and which lines count.

use serde_json::json;

use super::*;

/// 2024-11-24T12:00:00Z.
const H12: i64 = 1_732_449_600;
/// The boundary used throughout: 2024-11-24T14:00:00Z.
const T: i64 = H12 + 2 * 3600;

fn spec(filter: Option<&str>, key: &str, clustering: Option<&str>, op: &str) -> MappingSpec {
    MappingSpec {
        filter: filter.map(str::to_string),
        key: key.to_string(),
        clustering: clustering.map(str::to_string),
        op: op.to_string(),
    }
}

fn aggregator(ty: ValueType, op: &str) -> Aggregator {
    Aggregator::new(&spec(None, "k", None, op), ty, T).unwrap()
}

/// Feeds JSON lines, checking none overflows.
fn feed_all(agg: &mut Aggregator, lines: &[serde_json::Value]) -> Vec<Fed> {
    lines
        .iter()
        .map(|l| agg.feed(l.to_string().as_bytes()).unwrap())
        .collect()
}

fn rows(agg: Aggregator) -> Vec<(String, String, RowValue)> {
    agg.into_rows()
        .map(|r| (r.key, r.clustering, r.value))
        .collect()
}

fn one(key: &str, value: RowValue) -> Vec<(String, String, RowValue)> {
    vec![(key.to_string(), String::new(), value)]
}

#[test]
fn counter_sums_per_key_and_bucket_sorted() {
    let mut agg = Aggregator::new(
        &spec(Some("type == \"pv\""), "url", Some("hour(ts)"), "incr n"),
        ValueType::Counter,
        T,
    )
    .unwrap();
    feed_all(
        &mut agg,
        &[
            json!({"type":"pv","url":"/b","ts":H12,"n":2}),
            json!({"type":"pv","url":"/a","ts":H12 + 3600,"n":-5}),
            json!({"type":"pv","url":"/a","ts":H12 + 10,"n":1}),
            json!({"type":"pv","url":"/a","ts":H12 + 20,"n":"3"}),
            json!({"type":"click","url":"/a","ts":H12,"n":100}),
        ],
    );
    assert_eq!(
        rows(agg),
        vec![
            ("/a".into(), "2024-11-24T12".into(), RowValue::Int(4)),
            ("/a".into(), "2024-11-24T13".into(), RowValue::Int(-5)),
            ("/b".into(), "2024-11-24T12".into(), RowValue::Int(2)),
        ]
    );
}

#[test]
fn an_id_counts_once_per_row() {
    let mut agg = aggregator(ValueType::Counter, "incr n");
    let id = json!({"writer":"w","seq":7});
    let fed = feed_all(
        &mut agg,
        &[
            json!({"k":"a","ts":H12,"n":5,"id":id}),
            // A retry, even with another amount: the first one counted stands.
            json!({"k":"a","ts":H12,"n":9,"id":id}),
            // The same id on another row counts there.
            json!({"k":"b","ts":H12,"n":1,"id":id}),
            // Another seq or another writer is another update.
            json!({"k":"a","ts":H12,"n":1,"id":{"writer":"w","seq":8}}),
            json!({"k":"a","ts":H12,"n":1,"id":{"writer":"v","seq":7}}),
            // Without an id every event counts.
            json!({"k":"a","ts":H12,"n":10}),
            json!({"k":"a","ts":H12,"n":10}),
        ],
    );
    assert_eq!(fed[1], Fed::Duplicate);
    assert_eq!(
        rows(agg),
        vec![
            ("a".into(), String::new(), RowValue::Int(27)),
            ("b".into(), String::new(), RowValue::Int(1)),
        ]
    );
}

#[test]
fn gcounter_skips_negative_amounts() {
    let mut agg = aggregator(ValueType::Gcounter, "incr n");
    let fed = feed_all(
        &mut agg,
        &[
            json!({"k":"a","ts":H12,"n":3}),
            json!({"k":"a","ts":H12,"n":-1}),
            json!({"k":"b","ts":H12,"n":-1}),
        ],
    );
    assert!(matches!(fed[1], Fed::Skipped(Skip::Unmappable, _)));
    assert_eq!(agg.stats().unmappable, 2);
    // No row is created by a refused update.
    assert_eq!(rows(agg), one("a", RowValue::Int(3)));
}

#[test]
fn counter_overflow_stops_the_export() {
    let mut agg = aggregator(ValueType::Counter, "incr n");
    let line = serde_json::json!({"k":"a","ts":H12,"n":i64::MAX}).to_string();
    assert_eq!(agg.feed(line.as_bytes()), Ok(Fed::Counted));
    let err = agg.feed(line.as_bytes()).unwrap_err();
    assert_eq!(err.key, "a");
}

#[test]
fn max_and_min() {
    let lines = [
        json!({"k":"a","ts":H12,"v":3}),
        json!({"k":"a","ts":H12,"v":-7}),
        json!({"k":"a","ts":H12,"v":12}),
    ];
    let mut max = aggregator(ValueType::Max, "max v");
    feed_all(&mut max, &lines);
    assert_eq!(rows(max), one("a", RowValue::Int(12)));
    let mut min = aggregator(ValueType::Min, "min v");
    feed_all(&mut min, &lines);
    assert_eq!(rows(min), one("a", RowValue::Int(-7)));
    // `max ts`: the last event time before the boundary.
    let mut last_seen = aggregator(ValueType::Max, "max ts");
    feed_all(
        &mut last_seen,
        &[
            json!({"k":"a","ts":H12 as f64 + 5.9}),
            json!({"k":"a","ts":H12}),
        ],
    );
    assert_eq!(rows(last_seen), one("a", RowValue::Int(H12 + 5)));
}

#[test]
fn register_takes_the_latest_ts_and_the_later_line_on_ties() {
    let mut agg = aggregator(ValueType::Register, "set v");
    feed_all(
        &mut agg,
        &[
            json!({"k":"a","ts":H12 + 50,"v":"late"}),
            json!({"k":"a","ts":H12 + 10,"v":"early"}),
            json!({"k":"b","ts":H12,"v":"first"}),
            json!({"k":"b","ts":H12,"v":"second"}),
            json!({"k":"c","ts":H12 as f64 + 0.5,"v":"half"}),
            json!({"k":"c","ts":H12,"v":"whole"}),
        ],
    );
    assert_eq!(
        rows(agg),
        vec![
            ("a".into(), String::new(), RowValue::Text("late".into())),
            ("b".into(), String::new(), RowValue::Text("second".into())),
            ("c".into(), String::new(), RowValue::Text("half".into())),
        ]
    );
}

#[test]
fn set_adds_and_removes_in_input_order() {
    let mut adds = aggregator(ValueType::Set, "add tags");
    let id = json!({"writer":"w","seq":1});
    feed_all(
        &mut adds,
        &[
            json!({"k":"a","ts":H12,"tags":["x","y"],"id":id}),
            json!({"k":"a","ts":H12,"tags":"z"}),
            json!({"k":"a","ts":H12,"tags":["x"]}),
        ],
    );
    assert_eq!(
        rows(adds),
        one(
            "a",
            RowValue::Members(vec!["x".into(), "y".into(), "z".into()])
        )
    );
    // Removes only: every row ends empty, but exists (as it would in the realtime layer).
    let mut removes = aggregator(ValueType::Set, "remove tags");
    feed_all(&mut removes, &[json!({"k":"a","ts":H12,"tags":["x"]})]);
    assert_eq!(rows(removes), one("a", RowValue::Members(vec![])));
}

#[test]
fn set_retried_add_after_a_remove_stays_removed() {
    // One mapping has one op, so drive a set row directly with both kinds.
    let mut state = State::empty(ValueType::Set);
    let add = |m: &str| Op::Add(vec![m.as_bytes().to_vec()]);
    assert_eq!(
        apply_to(&mut state, add("x"), Some((0, 1)), 0),
        Some(Fed::Counted)
    );
    assert_eq!(apply_to(&mut state, add("y"), None, 0), Some(Fed::Counted));
    let remove = Op::Remove(vec![b"x".to_vec(), b"y".to_vec()]);
    assert_eq!(apply_to(&mut state, remove, None, 0), Some(Fed::Counted));
    // The retry of the first add (same id) is ignored; a new add of y counts again.
    assert_eq!(
        apply_to(&mut state, add("x"), Some((0, 1)), 0),
        Some(Fed::Duplicate)
    );
    assert_eq!(
        apply_to(&mut state, add("y"), Some((0, 2)), 0),
        Some(Fed::Counted)
    );
    assert_eq!(state.value(), RowValue::Members(vec!["y".into()]));
}

#[test]
fn hll_is_the_exact_distinct_count() {
    let mut agg = aggregator(ValueType::Hll, "pfadd visitor");
    let mut lines: Vec<_> = (0..5000)
        .map(|i| json!({"k":"a","ts":H12,"visitor":format!("v{}", i % 1234)}))
        .collect();
    lines.push(json!({"k":"b","ts":H12,"visitor":["p","q","p"]}));
    lines.push(json!({"k":"b","ts":H12,"visitor":7}));
    feed_all(&mut agg, &lines);
    assert_eq!(
        rows(agg),
        vec![
            ("a".into(), String::new(), RowValue::Distinct(1234)),
            ("b".into(), String::new(), RowValue::Distinct(3)),
        ]
    );
}

#[test]
fn what_is_left_out_and_why() {
    let mut agg = Aggregator::new(
        &spec(Some("type == \"pv\""), "url", None, "incr 1"),
        ValueType::Counter,
        T,
    )
    .unwrap();
    let lines: [&[u8]; 10] = [
        br#"{"type":"pv","url":"/a","ts":1732449600}"#,
        br#"{"type":"pv","url":"/a","ts":1732456799.999999}"#,
        // At the boundary and after it: the realtime layer's part.
        br#"{"type":"pv","url":"/a","ts":1732456800}"#,
        br#"{"type":"pv","url":"/a","ts":1732460000}"#,
        // No ts (or a null one): cannot be placed.
        br#"{"type":"pv","url":"/a"}"#,
        br#"{"type":"pv","url":"/a","ts":null}"#,
        br#"{"type":"click","url":"/a","ts":1732449600}"#,
        br#"{"type":"pv","ts":1732449600}"#,
        br#"{"type":"pv","url":"/a","ts":"soon"}"#,
        b"not json\r\n",
    ];
    let fed: Vec<Fed> = lines.iter().map(|l| agg.feed(l).unwrap()).collect();
    assert_eq!(agg.feed(b"  \r\n"), Ok(Fed::Blank));
    assert!(matches!(&fed[7], Fed::Skipped(Skip::Unmappable, why) if why.contains("url")));
    assert_eq!(
        agg.stats(),
        Stats {
            read: 10,
            counted: 2,
            duplicates: 0,
            malformed: 2,
            no_ts: 2,
            after_boundary: 2,
            filtered: 1,
            unmappable: 1,
        }
    );
    assert_eq!(agg.stats().skipped(), 8);
    assert_eq!(agg.row_count(), 1);
    assert_eq!(rows(agg), one("/a", RowValue::Int(2)));
}

#[test]
fn a_mapping_that_does_not_fit_the_type_is_refused() {
    let err =
        Aggregator::new(&spec(None, "k", None, "pfadd v"), ValueType::Counter, T).unwrap_err();
    assert_eq!(err.part, "op");
    assert!(Aggregator::new(&spec(None, "k", None, "decr"), ValueType::Gcounter, T).is_err());
}

#[test]
fn rows_serialize_in_the_import_format() {
    let row = BatchRow {
        key: "/a".into(),
        clustering: "2024-11-24T12".into(),
        value: RowValue::Members(vec!["x".into()]),
    };
    assert_eq!(
        serde_json::to_string(&row).unwrap(),
        r#"{"key":"/a","clustering":"2024-11-24T12","value":["x"]}"#
    );
    let text = BatchRow {
        value: RowValue::Text("v".into()),
        ..row.clone()
    };
    assert!(serde_json::to_string(&text)
        .unwrap()
        .ends_with(r#""value":"v"}"#));
    let count = BatchRow {
        value: RowValue::Distinct(3),
        ..row
    };
    assert!(serde_json::to_string(&count)
        .unwrap()
        .ends_with(r#""value":3}"#));
}
