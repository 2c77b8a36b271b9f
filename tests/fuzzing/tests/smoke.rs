//! A short run of every fuzz target in the normal suite: the seeds from the
//! fixtures, then deterministic mutations of them. The long coverage-guided
//! runs are `bash fuzz/run.sh`.

use civkit_fuzzing::{mutate, seeds, Target};

#[test]
fn every_target_survives_its_seeds_and_their_mutations() {
    for target in Target::ALL {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "{} has seeds", target.name());
        for s in &seeds {
            target.run(s);
        }
        let rounds = if target == Target::Session {
            300
        } else {
            3_000
        };
        for i in 0..rounds {
            let a = &seeds[i % seeds.len()];
            let b = &seeds[(i * 7 + 3) % seeds.len()];
            target.run(&mutate(a, b, i as u64));
        }
    }
}
