//! Writes each target's seeds into `fuzz/corpus/<target>/seed-<n>` (the fuzzer's starting
//! corpus, replayed by the test command). Run again after a message changes shape:
//! `cargo run -p mfsha-fuzz --example seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for target in mfsha_fuzz::Target::ALL {
        let dir = root.join(target.name());
        std::fs::create_dir_all(&dir)?;
        for (n, seed) in mfsha_fuzz::seeds(target).iter().enumerate() {
            let path = dir.join(format!("seed-{n}"));
            std::fs::write(&path, seed)?;
            println!("{} ({} bytes)", path.display(), seed.len());
        }
    }
    Ok(())
}
