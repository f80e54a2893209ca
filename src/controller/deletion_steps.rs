//! Ordered deletion steps: `status.deletion.step` names the last one completed, so a restarted operator
//! skips what is done and resumes at the next.

/// Whether `step` is done, given the ordered `steps` and the last completed one recorded in status.
pub fn done(steps: &[&str], last_completed: Option<&str>, step: &str) -> bool {
    let at = last_completed.and_then(|last| steps.iter().position(|s| *s == last));
    let want = steps.iter().position(|s| *s == step);
    matches!((at, want), (Some(a), Some(w)) if a >= w)
}

#[cfg(test)]
mod tests {
    use super::done;

    #[test]
    fn steps_up_to_the_recorded_one_are_done_and_later_ones_are_not() {
        let steps = ["A", "B", "C"];
        assert!(!done(&steps, None, "A"));
        assert!(done(&steps, Some("B"), "A") && done(&steps, Some("B"), "B"));
        assert!(!done(&steps, Some("B"), "C"));
        assert!(!done(&steps, Some("unknown"), "A"), "an unknown record redoes every (idempotent) step");
    }
}
