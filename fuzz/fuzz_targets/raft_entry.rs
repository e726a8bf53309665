#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mfsha_fuzz::Target::RaftEntry.run(data));
