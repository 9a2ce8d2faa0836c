use super::*;

fn spec(filter: Option<&str>, key: &str, clustering: Option<&str>, op: &str) -> MappingSpec {
    MappingSpec {
        filter: filter.map(str::to_string),
        key: key.to_string(),
        clustering: clustering.map(str::to_string),
        op: op.to_string(),
    }
}

fn event(json: &str) -> Event {
    Event::parse(json.as_bytes(), 1_000_000).unwrap()
}

#[test]
fn pageview_mappings() {
    let pageviews = Mapping::compile(
        &spec(
            Some(r#"type == "pageview""#),
            "url",
            Some("hour(ts)"),
            "incr 1",
        ),
        Some(ValueType::Counter),
    )
    .unwrap();
    let uniques = Mapping::compile(
        &spec(
            Some("type == 'pageview'"),
            "url",
            Some("hour(ts)"),
            "pfadd visitor",
        ),
        Some(ValueType::Hll),
    )
    .unwrap();
    let last_seen =
        Mapping::compile(&spec(None, "user", None, "max ts"), Some(ValueType::Max)).unwrap();
    let e = event(r#"{"type":"pageview","url":"/a","visitor":"v1","user":"u1","ts":1732450000}"#);
    let d = pageviews.derive(&e).unwrap().unwrap();
    assert_eq!(
        d.key,
        Key::new(b"/a".to_vec(), b"2024-11-24T12".to_vec()).unwrap()
    );
    assert_eq!(d.op, Op::Incr(1));
    assert_eq!(
        uniques.derive(&e).unwrap().unwrap().op,
        Op::PfAdd(vec![b"v1".to_vec()])
    );
    let d = last_seen.derive(&e).unwrap().unwrap();
    assert_eq!(d.op, Op::Max(1_732_450_000));
    assert_eq!(d.key.partition, b"u1".to_vec());

    let click = event(r#"{"type":"click","url":"/a"}"#);
    assert_eq!(pageviews.derive(&click), Ok(None));
    let no_url = event(r#"{"type":"pageview"}"#);
    assert_eq!(
        pageviews.derive(&no_url),
        Err("field 'url' is missing".to_string())
    );
}

#[test]
fn combined_keys_fields_and_filters() {
    let m = Mapping::compile(
        &spec(
            Some("has(user.id) and n != 3 && ok == true"),
            "site, user.id, 'x'",
            Some("day(at), kind"),
            "decr n",
        ),
        Some(ValueType::Counter),
    )
    .unwrap();
    let e = event(r#"{"site":"s","user":{"id":7},"n":"5","ok":true,"at":86400,"kind":"k"}"#);
    let d = m.derive(&e).unwrap().unwrap();
    assert_eq!(d.key.partition, b"s|7|x".to_vec());
    assert_eq!(d.key.clustering, b"1970-01-02|k".to_vec());
    assert_eq!(d.op, Op::Incr(-5));
    assert_eq!(
        m.derive(&event(r#"{"user":{"id":7},"n":3,"ok":true}"#)),
        Ok(None)
    );
    assert_eq!(m.derive(&event(r#"{"user":{},"n":1,"ok":true}"#)), Ok(None));
    let arr = Mapping::compile(&spec(None, "k", None, "add tags"), Some(ValueType::Set)).unwrap();
    assert_eq!(
        arr.derive(&event(r#"{"k":"a","tags":["x",2]}"#))
            .unwrap()
            .unwrap()
            .op,
        Op::Add(vec![b"x".to_vec(), b"2".to_vec()])
    );
}

#[test]
fn declaration_errors_are_clear() {
    let cases = [
        (
            spec(None, "url", None, "pfadd v"),
            Some(ValueType::Counter),
            "op: 'pfadd' does not apply to a counter view",
        ),
        (
            spec(None, "url", None, "decr"),
            Some(ValueType::Gcounter),
            "op: a gcounter only grows",
        ),
        (
            spec(None, "", None, "incr"),
            None,
            "key: needs at least one term",
        ),
        (
            spec(Some("type = 'a'"), "url", None, "incr"),
            None,
            "filter: unexpected '='",
        ),
        (
            spec(Some("type == pageview"), "url", None, "incr"),
            None,
            "quote strings",
        ),
        (
            spec(None, "url", Some("week(ts)"), "incr"),
            None,
            "unknown function 'week'",
        ),
        (spec(None, "url", None, "bump 1"), None, "unknown op 'bump'"),
        (
            spec(None, "url", None, "incr 1.5"),
            None,
            "'1.5' is not an integer",
        ),
        (spec(None, "url,", None, "incr"), None, "key: empty term"),
        (
            spec(Some("a == 1 and"), "url", None, "incr"),
            None,
            "empty condition",
        ),
    ];
    for (spec, ty, expected) in cases {
        let e = Mapping::compile(&spec, ty).unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} should contain {expected:?}");
    }
}

#[test]
fn values_of_the_wrong_kind_skip_the_event() {
    let m = Mapping::compile(&spec(None, "k", None, "incr n"), None).unwrap();
    assert_eq!(
        m.derive(&event(r#"{"k":{"a":1},"n":1}"#)),
        Err("field 'k' must be a string, number or boolean".into())
    );
    assert_eq!(
        m.derive(&event(r#"{"k":"a","n":1.5}"#)),
        Err("field 'n' must be an integer".into())
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Compiling never panics on arbitrary text, and a compiled mapping never panics
        /// on an arbitrary event.
        #[test]
        fn compile_and_derive_are_total(
            filter in proptest::option::of("[a-z.()=!&\"' 0-9,_-]{0,40}"),
            key in "[a-z.()\"' 0-9,_-]{0,30}",
            op in "(incr|decr|max|min|set|add|pfadd|x)( [a-z0-9.\"_-]{0,10})?",
            fields in proptest::collection::btree_map("[a-z]{1,3}", "[a-z0-9\"\\[\\]{},:.-]{0,12}", 0..5),
        ) {
            let spec = MappingSpec { filter, key, clustering: Some("hour(ts)".into()), op };
            if let Ok(m) = Mapping::compile(&spec, None) {
                let mut obj = serde_json::Map::new();
                for (k, v) in fields {
                    let value = serde_json::from_str(&v).unwrap_or(Json::String(v));
                    obj.insert(k, value);
                }
                if let Ok(e) = Event::from_fields(obj, 0) {
                    let _ = m.derive(&e);
                }
            }
        }
    }
}
