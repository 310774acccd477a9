//! `cargo xtask ci`: every check, in order, stopping at the first failure.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// Runs `cargo <args>` at the workspace root with `envs`, echoing the command first.
pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let shown: Vec<String> = envs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(std::iter::once("cargo".to_owned()))
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect();
    eprintln!("\n==> {}", shown.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", shown.join(" ")))
    }
}

pub(crate) fn run() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    eprintln!("\n==> cargo xtask tidy");
    crate::tidy::run()?;
    // The end-to-end suite (`oauth-tests`) runs below through `cargo xtask integration`, which
    // also prints its table; everything else runs here.
    cargo(
        &[
            "test",
            "--workspace",
            "--locked",
            "--exclude",
            "oauth-tests",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    eprintln!("\n==> cargo xtask integration");
    crate::integration::run(&[])?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}
