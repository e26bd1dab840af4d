//! What both benchmarks print: a table of figures with their goals, and the machine's CPU.

use std::fmt::Write as _;
use std::time::Duration;

/// A duration in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One line of the figures table.
pub struct Row {
    name: String,
    value: String,
    goal: String,
    verdict: &'static str,
}

impl Row {
    /// A figure with a goal, PASS or FAIL.
    pub fn goal(name: &str, value: String, goal: String, pass: bool) -> Row {
        Row {
            name: name.to_owned(),
            value,
            goal,
            verdict: if pass { "PASS" } else { "FAIL" },
        }
    }

    /// A figure without a goal.
    pub fn info(name: &str, value: String) -> Row {
        Row {
            name: name.to_owned(),
            value,
            goal: String::new(),
            verdict: "",
        }
    }
}

/// Prints the figures table.
pub fn print_table(rows: &[Row]) {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let v = rows.iter().map(|r| r.value.len()).max().unwrap_or(0).max(6);
    let g = rows.iter().map(|r| r.goal.len()).max().unwrap_or(0).max(4);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w$}  {:>v$}  {:<g$}  result",
        "figure", "value", "goal"
    );
    let _ = writeln!(s, "{}", "-".repeat(w + v + g + 12));
    for r in rows {
        let _ = writeln!(
            s,
            "{:<w$}  {:>v$}  {:<g$}  {}",
            r.name, r.value, r.goal, r.verdict
        );
    }
    print!("{s}");
}

/// The CPU model, as /proc/cpuinfo names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
