//! Fuzz target: see `speedlayer_fuzz::http_update`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| speedlayer_fuzz::http_update(data));
