//! Fuzz target: see `speedlayer_fuzz::stored_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| speedlayer_fuzz::stored_state(data));
