//! `cargo xtask bench`: runs every criterion benchmark of the workspace and prints one table.
//!
//! Criterion writes `target/criterion/<benchmark>/new/{benchmark,estimates}.json`; this reads the
//! ones written by this run and reports the mean time per operation (per element when the bench
//! declares a throughput) and the thread count encoded in the benchmark id (`1t`, `2thr`, ...).
//! A bench may leave figures of its own (series, bytes, memory per credential) as a flat JSON
//! object in `new/extra.json` beside criterion's files; they are printed in the last column.
//! Below the table, the hot-path goals of issue 16 (execute with Prometheus, selection, memory per
//! credential, two-thread scaling) are checked against the rows this run wrote.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::ci::{cargo, root};

/// The benchmarks of the workspace: (package, bench target).
const BENCHES: [(&str, &str); 6] = [
    ("oauth-metrics", "record"),
    ("oauth-metrics", "scrape"),
    ("oauth-webhooks", "notify"),
    ("oauth-manager", "pool"),
    ("oauth-manager", "footprint"),
    ("oauth-http", "adapter"),
];

/// The hot-path goals of issue 16, checked against this run's rows: (benchmark ids, what is
/// compared, the limit, whether the figure must stay at or below it).
const GOALS: [(&[&str], Figure, f64, bool); 6] = [
    (
        &[
            "execute_with_failover/prometheus/1t/3",
            "execute_with_failover/prometheus/1t/1000",
            "execute_with_failover/prometheus/1t/10000",
        ],
        Figure::Ns,
        150.0,
        true,
    ),
    (
        &[
            "next_credential/healthy/1t/3",
            "next_credential/healthy/1t/1000",
            "next_credential/healthy/1t/10000",
            "next_credential/all_but_one_down/1t/3",
            "next_credential/all_but_one_down/1t/1000",
            "next_credential/all_but_one_down/1t/10000",
        ],
        Figure::Ns,
        20.0,
        true,
    ),
    (
        &[
            "execute_with_failover/prometheus/1t/3",
            "execute_with_failover/prometheus/1t/1000",
            "execute_with_failover/prometheus/1t/10000",
            "execute_with_failover/prometheus_credential_histograms/1t/3",
            "execute_with_failover/prometheus_credential_histograms/1t/1000",
            "execute_with_failover/prometheus_credential_histograms/1t/10000",
            "execute_with_failover/no_recorder/1t/10000",
        ],
        Figure::Ns,
        250.0,
        true,
    ),
    (
        &["pool_footprint/no_recorder/1t/100000"],
        Figure::Extra("bytes_per_credential"),
        1024.0,
        true,
    ),
    (
        &["pool_footprint/prometheus/1t/100000"],
        Figure::Extra("bytes_per_credential"),
        2048.0,
        true,
    ),
    (
        &["execute_with_failover/prometheus/2t/3"],
        Figure::Extra("speedup_vs_1t"),
        1.5,
        false,
    ),
];

/// The figure of a row a goal compares.
#[derive(Clone, Copy)]
enum Figure {
    /// Nanoseconds per operation.
    Ns,
    /// A number in the row's `extra.json`.
    Extra(&'static str),
}

#[derive(Deserialize)]
struct Benchmark {
    full_id: String,
    #[serde(default)]
    throughput: Option<Throughput>,
}

/// Criterion's throughput; only element counts change the per-operation figure.
#[derive(Deserialize)]
enum Throughput {
    Elements(u64),
    ElementsAndBytes {
        elements: u64,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

struct Row {
    id: String,
    ns_per_op: f64,
    threads: u32,
    /// The bench's own figures from `extra.json` (`key=value ...`), or empty.
    extra: String,
    /// The same figures as numbers.
    extra_values: serde_json::Map<String, serde_json::Value>,
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut filter: Option<&str> = None;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask bench [--quick] [FILTER]\n  --quick  shorter warm-up and measurement\n  FILTER   only benchmarks whose id contains it"
                );
                return Ok(());
            }
            other => filter = Some(other),
        }
    }
    let started = SystemTime::now();
    for (package, bench) in BENCHES {
        let mut cmd = vec!["bench", "--package", package, "--bench", bench, "--"];
        if quick {
            cmd.extend(["--warm-up-time", "0.5", "--measurement-time", "1"]);
        }
        if let Some(f) = filter {
            cmd.push(f);
        }
        cargo(&cmd, &[])?;
    }
    let mut rows = Vec::new();
    let criterion_root = root().join("target").join("criterion");
    collect(&criterion_root, &criterion_root, started, &mut rows)?;
    if rows.is_empty() {
        return Err("no benchmark results were written".to_owned());
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(9).max(9);
    println!(
        "\n{:<width$}  {:>12}  {:>7}  figures",
        "benchmark", "ns/op", "threads"
    );
    println!(
        "{}  {}  {}  {}",
        "-".repeat(width),
        "-".repeat(12),
        "-".repeat(7),
        "-".repeat(7)
    );
    for r in &rows {
        println!(
            "{:<width$}  {:>12.1}  {:>7}  {}",
            r.id, r.ns_per_op, r.threads, r.extra
        );
    }
    println!(
        "\nns/op: criterion's mean time per iteration (per element where the bench sets a throughput);"
    );
    println!("multi-thread rows are aggregate: wall time / operations of all threads.");
    print_goals(&rows);
    Ok(())
}

/// Each goal of issue 16 whose rows this run measured: met or missed, with the worst figure.
fn print_goals(rows: &[Row]) {
    let mut lines = Vec::new();
    for (ids, figure, limit, at_most) in GOALS {
        let values: Vec<(&str, f64)> = ids
            .iter()
            .filter_map(|id| {
                let row = rows.iter().find(|r| r.id == *id)?;
                let v = match figure {
                    Figure::Ns => Some(row.ns_per_op),
                    Figure::Extra(key) => row.extra_values.get(key)?.as_f64(),
                }?;
                Some((*id, v))
            })
            .collect();
        let worst = values.iter().copied().reduce(|a, b| {
            if (at_most && b.1 > a.1) || (!at_most && b.1 < a.1) {
                b
            } else {
                a
            }
        });
        let Some((worst_id, worst_v)) = worst else {
            continue;
        };
        let met = if at_most {
            worst_v <= limit
        } else {
            worst_v >= limit
        };
        let what = match figure {
            Figure::Ns => "ns/op".to_owned(),
            Figure::Extra(key) => key.to_owned(),
        };
        lines.push(format!(
            "  {} {what} {} {limit} over {} of {} rows: worst {worst_v:.1} ({worst_id})",
            if met { "met   " } else { "MISSED" },
            if at_most { "<=" } else { ">=" },
            values.len(),
            ids.len(),
        ));
    }
    if !lines.is_empty() {
        println!("\ngoals (issue 16):");
        for l in lines {
            println!("{l}");
        }
    }
}

fn collect(
    criterion_root: &Path,
    dir: &Path,
    since: SystemTime,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(row) = read_row(criterion_root, &path, since)? {
                rows.push(row);
            }
        } else if path.file_name().is_some_and(|n| n != "report") {
            collect(criterion_root, &path, since, rows)?;
        }
    }
    Ok(())
}

fn read_row(criterion_root: &Path, dir: &Path, since: SystemTime) -> Result<Option<Row>, String> {
    let estimates: PathBuf = dir.join("estimates.json");
    let modified = std::fs::metadata(&estimates)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if modified < since {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let bench: Benchmark = serde_json::from_str(&read(&dir.join("benchmark.json"))?)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let est: Estimates =
        serde_json::from_str(&read(&estimates)?).map_err(|e| format!("{}: {e}", dir.display()))?;
    let per = match bench.throughput {
        Some(Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n }) if n > 0 => {
            n as f64
        }
        Some(_) | None => 1.0,
    };
    // Beside criterion's files; or where a bench wrote it by the id's own path (criterion turns
    // a `/` inside a function name or parameter into `_`, a bench joining the id's segments does
    // not).
    let mut extra_values = extra_of(&dir.join("extra.json"));
    if extra_values.is_empty() {
        let by_id = bench
            .full_id
            .split('/')
            .fold(criterion_root.to_path_buf(), |p, seg| p.join(seg));
        extra_values = extra_of(&by_id.join("new").join("extra.json"));
    }
    Ok(Some(Row {
        threads: threads_of(&bench.full_id),
        ns_per_op: est.mean.point_estimate / per,
        id: bench.full_id,
        extra: extra_values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        extra_values,
    }))
}

/// A bench's own figures from a flat JSON object (empty when there is none or it is not one).
fn extra_of(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The thread count a benchmark id encodes as a path segment like `2t`, `2thr` or `2threads`
/// (1 when it says nothing).
fn threads_of(id: &str) -> u32 {
    id.split(['/', ' ', '_'])
        .filter_map(|seg| {
            let digits: String = seg.chars().take_while(char::is_ascii_digit).collect();
            let rest = &seg[digits.len()..];
            (!digits.is_empty() && matches!(rest, "t" | "thr" | "threads" | "thread"))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .next()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::threads_of;

    #[test]
    fn thread_counts_come_from_the_id() {
        assert_eq!(threads_of("next_credential/healthy/2t/1000"), 2);
        assert_eq!(threads_of("record_request/in_memory/3cred/2thr"), 2);
        assert_eq!(threads_of("record_request/in_memory/10000cred/1thr"), 1);
        assert_eq!(threads_of("notify_100k/webhook_never_answers"), 1);
        assert_eq!(threads_of("x/4threads"), 4);
    }
}
