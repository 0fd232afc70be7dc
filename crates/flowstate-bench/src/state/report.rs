//! The `state` suite's report: a table (or JSON lines) of each op's median, beside
//! Flink 2.3's figure and the op's baseline.

use super::{OpResult, Variant};
use crate::{Backend, median_of};

/// Prints the table's title and column heads.
pub(crate) fn print_header(backend: Backend, warmup: usize, iterations: usize, seconds: f64) {
    println!("state benchmark: backend {backend:?}, {warmup} + {iterations} x {seconds} s per op");
    println!(
        "{:<16} {:<18} {:>14} {:>14} {:>14} {:>22} {:>8} {:>14} {:>8}",
        "state", "op", "median ops/s", "min", "max", "reference", "ratio", "baseline", "of it"
    );
}

/// Prints one row per result: its median, min and max, beside Flink's figure (or, for a
/// TTL row, the same op without TTL) and its baseline's; `json`: one object per row.
pub(crate) fn print(results: &[OpResult], backend: Backend, iterations: usize, json: bool) {
    let name = format!("{backend:?}").to_lowercase();
    for r in results {
        let mut s = r.samples.clone();
        s.sort_by(f64::total_cmp);
        let median = median_of(&s);
        let (min, max) = (
            s.first().copied().unwrap_or(0.0),
            s.last().copied().unwrap_or(0.0),
        );
        // TTL rows compare with the same op measured without TTL in this run;
        // the others with Flink and with the plain op's baseline.
        let plain = results
            .iter()
            .find(|o| o.variant == Variant::default() && o.op == r.op && o.state == r.state);
        let (reference, label) = if r.variant.ttl {
            (plain.map(|o| median_of(&o.samples)), "no TTL")
        } else {
            (flink_figure(backend, r.op), "Flink 2.3")
        };
        let Variant {
            ttl,
            prefetch,
            fixed,
        } = r.variant;
        let baseline = plain
            .filter(|_| !ttl)
            .and_then(|o| o.baseline.as_deref())
            .map(median_of);
        let state = match (ttl, prefetch, fixed) {
            (true, _, _) => format!("{}+TTL", r.state),
            (false, true, _) => format!("{}+prefetch", r.state),
            (false, false, true) => format!("{}+fixed", r.state),
            (false, false, false) => r.state.to_string(),
        };
        if json {
            let mut obj = serde_json::json!({
                "suite": "state", "backend": name, "state": r.state, "op": r.op, "ops_per_sec": median,
                "iterations": iterations, "min": min, "max": max, "ttl": ttl, "prefetch": prefetch,
                "fixed_integers": fixed,
            });
            if ttl {
                obj["no_ttl_ops_per_sec"] = serde_json::json!(reference);
                obj["ratio_vs_no_ttl"] = serde_json::json!(reference.map(|f| median / f));
            } else {
                obj["flink_ops_per_sec"] = serde_json::json!(reference);
                obj["ratio_vs_flink"] = serde_json::json!(reference.map(|f| median / f));
                obj["baseline_ops_per_sec"] = serde_json::json!(baseline);
                obj["ratio_vs_baseline"] = serde_json::json!(baseline.map(|b| median / b));
            }
            println!("{obj}");
        } else {
            let ratio =
                reference.map_or_else(|| "-".to_string(), |f| format!("{:.2}x", median / f));
            let reference =
                reference.map_or_else(|| "-".to_string(), |f| format!("{f:.0} ({label})"));
            let (baseline, of_baseline) = baseline.map_or_else(
                || ("-".to_string(), "-".to_string()),
                |b| (format!("{b:.0}"), format!("{:.2}x", median / b)),
            );
            println!(
                "{:<16} {:<18} {:>14.0} {:>14.0} {:>14.0} {:>22} {:>8} {:>14} {:>8}",
                state, r.op, median, min, max, reference, ratio, baseline, of_baseline
            );
        }
    }
}

/// Flink 2.3.0 on a 2-core machine like ours (median ops/s, `shared/BENCHMARKS.md`).
fn flink_figure(backend: Backend, op: &str) -> Option<f64> {
    let (heap, rocks) = match op {
        "valueGet" => (2.68e6, 261e3),
        "valueUpdate" => (2.09e6, 224e3),
        "valueAdd" => (3.16e6, 173e3),
        "listGet" => (2.29e6, 128e3),
        "listGetAndIterate" => (1.97e6, 94e3),
        "listAppend" => (1.90e6, 313e3),
        "mapGet" => (1.85e6, 48e3),
        "mapContains" => (1.48e6, 53e3),
        "mapIterator" => (8.26e6, 256e3),
        "mapUpdate" => (607e3, 91e3),
        "mapAdd" => (2.87e6, 96e3),
        _ => return None,
    };
    Some(if backend == Backend::Heap {
        heap
    } else {
        rocks
    })
}
