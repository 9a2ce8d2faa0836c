//! Fuzz target: see `speedlayer_fuzz::resp_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| speedlayer_fuzz::resp_request(data));
