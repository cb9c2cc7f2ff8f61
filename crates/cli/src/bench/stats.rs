//! Percentiles and the JSON report writer shared by the scenarios.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

/// Writes a report as pretty JSON.
pub fn write_json(path: &PathBuf, doc: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(doc)?)
        .with_context(|| format!("Failed to write {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// p50/p95/p99 in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Pcts {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Exact percentiles (nearest rank) of a sample.
pub fn pcts(samples: &[f64]) -> Pcts {
    let d = dist(samples);
    Pcts { p50: d.p50, p95: d.p95, p99: d.p99 }
}

/// p50/p80/p95/p99/max.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Dist {
    pub p50: f64,
    pub p80: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Exact distribution (nearest rank) of a sample.
pub fn dist(samples: &[f64]) -> Dist {
    if samples.is_empty() {
        return Dist::default();
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Dist { p50: q(0.5), p80: q(0.8), p95: q(0.95), p99: q(0.99), max: v[v.len() - 1] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = pcts(&v);
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        assert_eq!(pcts(&[]).p99, 0.0);
    }
}
