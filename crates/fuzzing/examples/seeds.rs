//! Write each fuzz target's seed inputs into `fuzz/corpus/<target>/`
//! (`cargo run -p fathom-fuzzing --example seeds [-- FOLDER]`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"));
    for (target, _) in fathom_fuzzing::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in fathom_fuzzing::seeds::seeds(target) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{}", dir.display());
    }
    Ok(())
}
