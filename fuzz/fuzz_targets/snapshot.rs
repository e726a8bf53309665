#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mfsha_fuzz::Target::Snapshot.run(data));
