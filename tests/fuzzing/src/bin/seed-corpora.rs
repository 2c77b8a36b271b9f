//! Write each fuzz target's seeds (from the real fixtures) into
//! `<dir>/<target>/seed-<n>`, the corpus layout cargo-fuzz reads.

use civkit_fuzzing::{seeds, Target};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_string());
    for t in Target::ALL {
        let d = std::path::Path::new(&dir).join(t.name());
        std::fs::create_dir_all(&d)?;
        let s = seeds(t);
        for (i, seed) in s.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), seed)?;
        }
        println!("{}: {} seeds", t.name(), s.len());
    }
    Ok(())
}
