use speedlayer_core::Hll;
#[test]
fn show() {
    let mut h = Hll::default();
    let mut next = 1u64;
    for i in 0..3_000_000u64 {
        h.add(format!("visitor-{i}").as_bytes());
        if i + 1 == next {
            eprintln!(
                "{} -> {} ({:+.3}%)",
                next,
                h.count(),
                (h.count() as f64 / next as f64 - 1.0) * 100.0
            );
            next *= 3;
        }
    }
    for salt in ["a", "b", "c", "d"] {
        let mut h = Hll::default();
        for i in 0..1_000_000u64 {
            h.add(format!("{salt}{i}").as_bytes());
        }
        eprintln!(
            "salt {salt}: {:+.3}%",
            (h.count() as f64 / 1e6 - 1.0) * 100.0
        );
    }
}
