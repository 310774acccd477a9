//! `cargo xtask <command>`: the workspace's automation, in Rust so it runs wherever cargo does.

use std::process::ExitCode;

mod ci;
mod tidy;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci      fmt --check, clippy -D warnings, tidy, test, doc (warnings denied); stops at the first failure
  tidy    check the crate graph and that every member inherits the workspace lints
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("tidy") => tidy::run(),
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
