//! The committed inputs of a fuzz target, for the workspace's regression tests that replay
//! them (included there by path, like the oracles).

use std::path::{Path, PathBuf};

/// Every file of `target`'s committed corpus and reproducer folders under `fuzz`, with
/// its path.
pub fn committed_inputs(fuzz: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            inputs.push((path, bytes));
        }
    }
    inputs
}
