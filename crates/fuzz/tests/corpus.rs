//! The fuzz corpus replays in the test command: every input the fuzzer kept (and every
//! crash it found, once fixed, is added here by hand) and every seed runs through its target.
//! A missing or empty corpus directory fails: the replay must not pass by finding nothing.

use std::path::{Path, PathBuf};

use mfsha_fuzz::{seeds, Target};

fn corpus_dir(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target.name())
}

fn inputs(target: Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "fuzz corpus {} is missing ({e}): run `cargo run -p mfsha-fuzz --example seeds`",
            dir.display()
        )
    });
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("reading the corpus directory").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "fuzz corpus {} is empty", dir.display());
    inputs
}

#[test]
fn every_corpus_input_and_seed_runs_clean_through_its_target() {
    for target in Target::ALL {
        let inputs = inputs(target);
        for (path, bytes) in &inputs {
            let outcome = std::panic::catch_unwind(|| target.run(bytes));
            assert!(outcome.is_ok(), "{} failed on {}", target.name(), path.display());
        }
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "{} has no seeds", target.name());
        for seed in &seeds {
            target.run(seed);
        }
        println!("{}: {} corpus inputs and {} seeds", target.name(), inputs.len(), seeds.len());
    }
}

/// The seeds must reach past the first checks, or the fuzzer starts from nothing: each
/// frame seed decodes whole, the snapshot seeds load, the chunk header seed is valid.
#[test]
fn the_seeds_are_valid_inputs_of_their_kind() {
    use mfsha_proto::frame;
    for seed in seeds(Target::ClientPort) {
        let request = frame::decode::<mfsha_proto::client::Request>(&seed);
        let answer = frame::decode::<mfsha_proto::client::Answer>(&seed);
        assert!(matches!(request, Ok(Some(_))) || matches!(answer, Ok(Some(_))), "{seed:?}");
    }
    for seed in seeds(Target::Snapshot) {
        mfsha_meta::State::from_snapshot(&seed[1..]).expect("a snapshot seed loads");
    }
    let header = &seeds(Target::ChunkHeader)[0];
    assert_eq!(mfsha_chunk::format::decode_header(&header[1..]), Ok((0x1234, 7)));
    for seed in seeds(Target::Config) {
        let text = std::str::from_utf8(&seed[1..]).unwrap();
        let path = Path::new("seed.yaml");
        let parsed = match seed[0] {
            0 => mfsha_master_ha::config::parse(path, text).err().map(|e| e.to_string()),
            1 => mfsha_chunk::config::parse(path, text).err().map(|e| e.to_string()),
            _ => mfsha_logger::config::parse(path, text).err().map(|e| e.to_string()),
        };
        assert_eq!(parsed, None, "config seed {} does not parse", seed[0]);
    }
    let accounts = mfsha_master_ha::exports::Accounts::from_text(
        "mfs:x:998:998::/:/bin/false\n",
        "mfs:x:998:\n",
    );
    for seed in seeds(Target::Exports) {
        let text = String::from_utf8(seed).unwrap();
        let parsed =
            mfsha_master_ha::exports::Exports::parse(Path::new("seed.cfg"), &text, &accounts);
        assert!(parsed.is_ok(), "an exports seed does not parse: {parsed:?}");
    }
}
