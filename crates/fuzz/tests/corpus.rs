//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`, grown and minimised by
//! `fuzz/run.sh`) and the inputs that once broke it (`fuzz/regressions/<target>/`, kept by
//! hand: minimising a corpus may drop them) through the same function the target calls, so
//! whatever the fuzzer once found stays fixed, on a stable toolchain and without libFuzzer.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target)
}

fn corpus_dir(target: &str) -> PathBuf {
    fuzz_dir("corpus", target)
}

#[test]
fn every_corpus_input_keeps_its_targets_contract() {
    for &(target, body) in speedlayer_fuzz::TARGETS {
        let dir = corpus_dir(target);
        let corpus = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{target}: no corpus at {}: {e}", dir.display()));
        let regressions = std::fs::read_dir(fuzz_dir("regressions", target))
            .into_iter()
            .flatten();
        let mut inputs = 0;
        for entry in corpus.chain(regressions) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(outcome.is_ok(), "{target}: {} breaks it", path.display());
            inputs += 1;
        }
        // A corpus that vanished would make this test pass on nothing.
        assert!(inputs >= 5, "{target}: only {inputs} corpus inputs");
        eprintln!("{target}: {inputs} inputs");
    }
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_entry() {
    let targets = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/Cargo.toml"),
    )
    .unwrap();
    for &(target, _) in speedlayer_fuzz::TARGETS {
        assert!(corpus_dir(target).is_dir(), "{target}: no corpus directory");
        assert!(
            targets.contains(&format!("name = \"{target}\"")),
            "{target}: not a target in fuzz/Cargo.toml"
        );
    }
}
