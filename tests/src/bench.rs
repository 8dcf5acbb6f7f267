//! Shared by the benchmarks: summaries of repeated measurements.

use std::time::Duration;

/// The p-th percentile (0.0..=1.0) of sorted samples, nearest rank.
pub fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints one line: n, min, p50, p99, max in milliseconds.
pub fn stats(name: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        println!("{name:<48} no samples");
        return;
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<48} n={:<3} min {:>7.3} ms  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        v.len(),
        ms(v[0]),
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
        ms(v[v.len() - 1])
    );
}
