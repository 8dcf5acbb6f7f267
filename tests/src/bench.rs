//! Shared by the benchmarks: summaries of repeated measurements.

use serde::Serialize;
use std::time::Duration;

/// The p-th percentile (0.0..=1.0) of sorted samples, nearest rank.
pub fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// n, min, p50, p99 and max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// None without samples.
    pub fn of(mut v: Vec<f64>) -> Option<Summary> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            min: v[0],
            p50: pct(&v, 0.5),
            p99: pct(&v, 0.99),
            max: v[v.len() - 1],
        })
    }

    /// Of durations, in milliseconds.
    pub fn of_durations(v: &[Duration]) -> Option<Summary> {
        Summary::of(v.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }
}

/// Prints one line: n, min, p50, p99, max in milliseconds.
pub fn stats(name: &str, v: &[Duration]) {
    match Summary::of_durations(v) {
        None => println!("{name:<48} no samples"),
        Some(s) => println!(
            "{name:<48} n={:<3} min {:>7.3} ms  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            s.n, s.min, s.p50, s.p99, s.max
        ),
    }
}

/// The machine and revision a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cores: usize,
    pub revision: String,
}

impl Machine {
    pub fn here() -> Machine {
        Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            revision: std::process::Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(crate::workspace_root())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
        }
    }
}

/// target/bench, created.
pub fn dir() -> std::path::PathBuf {
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Copies the logs (`*.log`, `*.err`) of a lab directory to target/bench/logs/NAME/.
pub fn keep_logs(from: &std::path::Path, name: &str) {
    let to = dir().join("logs").join(name);
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".log") || name.to_string_lossy().ends_with(".err") {
            let _ = std::fs::copy(e.path(), to.join(&name));
        }
    }
}

/// How many rounds a bench runs: MMM_BENCH_ROUNDS, or `default` when unset or not a
/// number.
pub fn rounds(default: usize) -> usize {
    std::env::var("MMM_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Writes target/bench/NAME.md and NAME.json (pretty), the two forms of every bench's
/// report: the .md for people, the .json for plots and comparisons. Returns the .md's
/// path.
pub fn write_report(name: &str, md: &str, json: &serde_json::Value) -> std::path::PathBuf {
    let dir = dir();
    let md_path = dir.join(format!("{name}.md"));
    std::fs::write(&md_path, md).unwrap_or_else(|e| panic!("writing {}: {e}", md_path.display()));
    let json_path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(json).expect("a JSON value renders");
    std::fs::write(&json_path, text)
        .unwrap_or_else(|e| panic!("writing {}: {e}", json_path.display()));
    md_path
}
