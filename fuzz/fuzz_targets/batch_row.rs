//! Fuzz target: see `speedlayer_fuzz::batch_row`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| speedlayer_fuzz::batch_row(data));
