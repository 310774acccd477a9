//! The demo: a fake token server, fake AI provider and webhook receiver on 127.0.0.1, a pool of
//! credentials under concurrent traffic with scripted faults, a live progress line, then the
//! per-credential results, the webhooks received and a `/metrics` scrape, each checked.
//!
//! `cargo xtask demo` builds and runs it (`cargo xtask demo --help` for its options).

// A command-line program: printing is its job.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

mod demo;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match demo::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
