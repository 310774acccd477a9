//! `cargo xtask integration`: runs the end-to-end suite under `tests/` (package `oauth-tests`)
//! against oauth-testkit's real servers on 127.0.0.1 and prints one table: scenario, result, key
//! figures.
//!
//! The result of each scenario is the test's own outcome (libtest's `test name ... ok` lines); the
//! figures are the JSON row each scenario writes into the directory named by
//! `OAUTH_TESTS_RESULTS_DIR` (`{"scenario": .., "figures": {..}}`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

const USAGE: &str = "\
usage: cargo xtask integration [--soak-secs N] [FILTER]

Runs the end-to-end suite (tests/, package oauth-tests) and prints a table of scenarios.
  --soak-secs N   run the soak for N seconds (default 10)
  FILTER          only the tests whose name contains FILTER (as `cargo test FILTER`)
";

/// Where the suite writes its result rows (read by `tests/it/support.rs`).
const RESULTS_DIR_VAR: &str = "OAUTH_TESTS_RESULTS_DIR";
/// The soak's duration in seconds (read by `tests/it/soak.rs`).
const SOAK_SECS_VAR: &str = "OAUTH_SOAK_SECS";

#[derive(Debug, Default)]
struct Options {
    soak_secs: Option<u64>,
    filter: Option<String>,
    help: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => opts.help = true,
            "--soak-secs" => {
                let v = it.next().ok_or("--soak-secs needs a number of seconds")?;
                opts.soak_secs = Some(
                    v.parse()
                        .map_err(|_| format!("--soak-secs: not a number of seconds: {v}"))?,
                );
            }
            a if a.starts_with("--soak-secs=") => {
                let v = &a["--soak-secs=".len()..];
                opts.soak_secs = Some(
                    v.parse()
                        .map_err(|_| format!("--soak-secs: not a number of seconds: {v}"))?,
                );
            }
            a if a.starts_with('-') => return Err(format!("unknown option {a}\n\n{USAGE}")),
            a if opts.filter.is_none() => opts.filter = Some(a.to_owned()),
            a => return Err(format!("unexpected argument {a}\n\n{USAGE}")),
        }
    }
    Ok(opts)
}

/// One test's outcome, from libtest's output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    test: String,
    passed: bool,
}

/// Reads a libtest line: `test <name> ... ok|FAILED` (ignored tests are not scenarios).
fn outcome(line: &str) -> Option<Outcome> {
    let rest = line.strip_prefix("test ")?;
    let (test, verdict) = rest.split_once(" ... ")?;
    let passed = match verdict.trim() {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    Some(Outcome {
        test: test.to_owned(),
        passed,
    })
}

/// The figures rows in `dir`, by scenario.
fn rows(dir: &Path) -> BTreeMap<String, Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<Value>(&text).ok())
        .filter_map(|row| {
            let scenario = row.get("scenario")?.as_str()?.to_owned();
            Some((scenario, row.get("figures").cloned().unwrap_or(Value::Null)))
        })
        .collect()
}

/// `k=v, k=v` from a JSON object (strings unquoted, everything else compact JSON).
fn figures(value: Option<&Value>) -> String {
    let Some(Value::Object(map)) = value else {
        return "-".to_owned();
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn results_dir() -> PathBuf {
    std::env::temp_dir().join(format!("oauth-integration-{}", std::process::id()))
}

/// Runs `cargo test -p oauth-tests`, echoing its output, and returns the outcomes and whether
/// cargo succeeded.
fn run_suite(opts: &Options, dir: &Path) -> Result<(Vec<Outcome>, bool), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "-p", "oauth-tests"]);
    if let Some(filter) = &opts.filter {
        cmd.args(["--", filter.as_str()]);
    }
    cmd.env(RESULTS_DIR_VAR, dir)
        .current_dir(crate::ci::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(secs) = opts.soak_secs {
        cmd.env(SOAK_SECS_VAR, secs.to_string());
    }
    let mut shown = vec!["cargo test -p oauth-tests".to_owned()];
    if let Some(secs) = opts.soak_secs {
        shown.insert(0, format!("{SOAK_SECS_VAR}={secs}"));
    }
    if let Some(filter) = &opts.filter {
        shown.push(format!("-- {filter}"));
    }
    eprintln!("\n==> {}", shown.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let mut outcomes = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading the test output: {e}"))?;
            eprintln!("{line}");
            outcomes.extend(outcome(&line));
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    Ok((outcomes, status.success()))
}

/// One row per scenario (the test module): it passes when all its tests passed.
fn print_table(outcomes: &[Outcome], rows: &BTreeMap<String, Value>) {
    let mut scenarios: BTreeMap<&str, bool> = BTreeMap::new();
    for o in outcomes {
        let scenario = o.test.split("::").next().unwrap_or(&o.test);
        *scenarios.entry(scenario).or_insert(true) &= o.passed;
    }
    let header = ["scenario", "result", "key figures"];
    let w0 = scenarios
        .keys()
        .map(|s| s.len())
        .chain([header[0].len()])
        .max()
        .unwrap_or(0);
    println!();
    println!("{:<w0$}  {:<6}  {}", header[0], header[1], header[2]);
    println!("{:-<w0$}  {:-<6}  {:-<11}", "", "", "");
    for (scenario, passed) in scenarios {
        let result = if passed { "pass" } else { "FAIL" };
        let figures = figures(rows.get(scenario));
        println!("{scenario:<w0$}  {result:<6}  {figures}");
    }
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    if opts.help {
        eprint!("{USAGE}");
        return Ok(());
    }
    let dir = results_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let started = Instant::now();
    let suite = run_suite(&opts, &dir);
    let elapsed = started.elapsed();
    let rows = rows(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (mut outcomes, cargo_ok) = suite?;
    outcomes.sort_by(|a, b| a.test.cmp(&b.test));

    print_table(&outcomes, &rows);
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    println!(
        "\n{} test(s), {} passed, {failed} failed, in {:.1} s",
        outcomes.len(),
        outcomes.len() - failed,
        elapsed.as_secs_f64()
    );
    if failed > 0 {
        let names: Vec<&str> = outcomes
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.test.as_str())
            .collect();
        return Err(format!("integration tests failed: {}", names.join(", ")));
    }
    if !cargo_ok {
        return Err("`cargo test -p oauth-tests` failed".to_owned());
    }
    if outcomes.is_empty() {
        return Err("no integration scenario ran".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_are_read() {
        assert_eq!(
            outcome("test soak::soak_x ... ok"),
            Some(Outcome {
                test: "soak::soak_x".into(),
                passed: true
            })
        );
        assert_eq!(
            outcome("test a::b ... FAILED").map(|o| o.passed),
            Some(false)
        );
        assert_eq!(outcome("test a::child ... ignored, a child process"), None);
        assert_eq!(outcome("running 10 tests"), None);
    }

    #[test]
    fn options_and_figures() {
        let o = parse(&["--soak-secs".into(), "60".into(), "soak".into()]).expect("parses");
        assert_eq!((o.soak_secs, o.filter.as_deref()), (Some(60), Some("soak")));
        assert_eq!(
            parse(&["--soak-secs=5".into()]).expect("parses").soak_secs,
            Some(5)
        );
        assert!(parse(&["--soak-secs".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
        let v: Value = serde_json::json!({"a": 1, "b": "x", "c": [1, 2]});
        assert_eq!(figures(Some(&v)), "a=1, b=x, c=[1,2]");
        assert_eq!(figures(None), "-");
    }
}
