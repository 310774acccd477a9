//! `cargo xtask <command>`: the workspace's automation, in Rust so it runs wherever cargo does.

// A command-line tool: printing is its job.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

mod bench;
mod ci;
mod integration;
mod tidy;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  demo         the main job: fake token server, fake AI provider and webhook receiver on
               127.0.0.1, a pool of credentials under concurrent traffic with faults, a live
               progress line, then per-credential results, webhooks and /metrics
               (cargo xtask demo --help for options)
  ci           fmt --check, clippy -D warnings, tidy, test, doc, integration; stops at the first failure
  integration  the end-to-end suite under tests/ against real servers on 127.0.0.1, as a table
               (--soak-secs N for a longer soak)
  bench        every criterion benchmark, summarized as one table (benchmark, ns/op, threads)
  tidy         check the crate graph and that every member inherits the workspace lints
";

/// Builds and runs the demo binary (`crates/oauth-demo`), showing cargo's progress while it builds.
fn demo(args: &[String]) -> Result<(), String> {
    let mut cargo_args = vec!["run", "--package", "oauth-demo", "--"];
    cargo_args.extend(args.iter().map(String::as_str));
    ci::cargo(&cargo_args, &[])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("tidy") => tidy::run(),
        Some("demo") => demo(rest),
        Some("integration") => integration::run(rest),
        Some("bench") => bench::run(rest),
        Some("help" | "--help" | "-h") => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprint!("{USAGE}");
            if let Some(cmd) = other {
                eprintln!("\nunknown command: {cmd}");
            }
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
