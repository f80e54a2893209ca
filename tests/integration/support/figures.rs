//! Figures the reliability tests report: cargo test hides what a passing test prints, so each line also
//! goes to `target/tmp/figures.txt`, which `deploy/local/test.sh` prints when the run ends.

use std::io::Write;

/// Prints `line` and appends it to the run's figures file.
pub fn report(line: String) {
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}
