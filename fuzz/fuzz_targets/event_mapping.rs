//! Fuzz target: see `speedlayer_fuzz::event_mapping`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| speedlayer_fuzz::event_mapping(data));
