//! The figures a run measured, each with its target, printed as one table at the end (and as they come).

/// Measured figures in the order they were taken.
#[derive(Default)]
pub struct Figures {
    rows: Vec<(String, String, String)>,
}

impl Figures {
    /// Records (and prints at once, so a long run shows progress) one figure and its target.
    pub fn add(&mut self, name: &str, value: impl std::fmt::Display, target: &str) {
        let value = value.to_string();
        eprintln!(
            "[fleet] {name}: {value}{}",
            if target.is_empty() { String::new() } else { format!(" (target {target})") }
        );
        self.rows.push((name.to_string(), value, target.to_string()));
    }

    /// Prints every figure as a Markdown table, ready for the README's performance section.
    pub fn print(&self) {
        println!("| figure | measured | target |");
        println!("|---|---|---|");
        for (name, value, target) in &self.rows {
            println!("| {name} | {value} | {target} |");
        }
    }
}

/// Seconds with one decimal.
pub fn seconds(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
