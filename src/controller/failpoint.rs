//! Crash-safety testing: `DPS_OPERATOR_FAILPOINT=<step>` makes the process exit at once (no cleanup, no
//! status write) right after the named step, as a `kill -9` would leave it.

/// The environment variable naming the step to die after.
pub const ENV: &str = "DPS_OPERATOR_FAILPOINT";

/// Exits the process with status 86 when `step` is the configured failpoint.
pub fn hit(step: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == step) {
        tracing::error!(step, "failpoint reached: exiting");
        std::process::exit(86);
    }
}
