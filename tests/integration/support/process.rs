//! Child processes of tests: read their output line by line with a deadline.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Lines of a child's output, read on a thread so waiting can have a deadline.
pub struct Lines {
    receiver: Receiver<String>,
    /// Every line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `stream` (a child's stdout or stderr).
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { receiver, seen: Vec::new() }
    }

    /// Waits for a line that `matches` accepts and returns what it extracted, or `None` when the stream
    /// ends or `deadline` passes first.
    pub fn wait_for<T>(&mut self, deadline: Duration, mut matches: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let give_up = Instant::now() + deadline;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            let line = self.receiver.recv_timeout(left).ok()?;
            let found = matches(&line);
            self.seen.push(line);
            if found.is_some() {
                return found;
            }
        }
    }
}

/// Runs `command` to completion, failing the test with its output unless it succeeds; its stdout.
pub fn run(command: &mut std::process::Command) -> String {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A log without terminal colour sequences (ESC `[` ... `m`).
pub fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (false, c) => out.push(c),
            (true, _) => {}
        }
    }
    out
}
