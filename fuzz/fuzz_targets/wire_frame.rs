//! Fuzz target: see `speedlayer_fuzz::wire_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| speedlayer_fuzz::wire_frame(data));
