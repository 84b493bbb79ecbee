//! What a run found, for people and for scripts.

use serde_json::{Map, Value, json};

/// The outcome of one scenario run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// `tcp` or `ws`.
    pub transport: &'static str,
    /// The parameters it ran with.
    pub params: Map<String, Value>,
    /// Results, in display order: (name, value, unit).
    pub results: Vec<(&'static str, f64, &'static str)>,
}

impl Report {
    /// A result by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| *v)
    }

    /// One JSON object.
    pub fn to_json(&self) -> Value {
        let results: Map<String, Value> = self
            .results
            .iter()
            .map(|(n, v, _)| ((*n).to_string(), json!(v)))
            .collect();
        json!({
            "scenario": self.scenario,
            "transport": self.transport,
            "params": self.params,
            "results": results,
        })
    }

    /// Prints the summary (or one JSON line) to stdout.
    #[allow(clippy::print_stdout)]
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
            return;
        }
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{} over {} ({})",
            self.scenario,
            self.transport,
            params.join(" ")
        );
        for (name, value, unit) in &self.results {
            let shown = if value.fract() == 0.0 && value.abs() < 1e15 {
                format!("{value:.0}")
            } else if value.abs() < 10.0 {
                // Ratios: one decimal would show 1.16 and 1.24 alike.
                format!("{value:.2}")
            } else {
                format!("{value:.1}")
            };
            println!("  {name:<22} {shown:>14} {unit}");
        }
    }
}
