//! `keeper [--config FILE] [serve]` runs the keeper; `keeper [--config FILE] login <provider>
//! [account]` signs an account in from the terminal and writes its file.

use std::path::PathBuf;
use std::process::ExitCode;

use oauth_keeper::{Keeper, KeeperConfig, ProviderKind};

const USAGE: &str = "usage: keeper [--config FILE] [serve]\n       keeper [--config FILE] login <gemini|claude|codex|qwen> [account-id]\n\nConfiguration: the TOML file (default ./keeper.toml when present) and KEEPER_* variables\n(see docs/guides/keeper.md).";

enum Command {
    Serve,
    Login(ProviderKind, Option<String>),
}

fn parse_args() -> Result<(Option<PathBuf>, Command), String> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut rest = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?))
            }
            "--help" | "-h" => return Err(String::new()),
            _ => rest.push(a),
        }
    }
    let command = match rest.first().map(String::as_str) {
        None | Some("serve") if rest.len() <= 1 => Command::Serve,
        Some("login") if (2..=3).contains(&rest.len()) => {
            let kind = rest[1].parse::<ProviderKind>().map_err(|e| e.to_string())?;
            Command::Login(kind, rest.get(2).cloned())
        }
        _ => return Err("unexpected arguments".into()),
    };
    if config.is_none() && std::path::Path::new("keeper.toml").is_file() {
        config = Some(PathBuf::from("keeper.toml"));
    }
    Ok((config, command))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let (config_path, command) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("keeper: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match KeeperConfig::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keeper: {e}");
            return ExitCode::from(2);
        }
    };
    let keeper = match Keeper::builder(config).build().await {
        Ok(k) => k,
        Err(e) => {
            eprintln!("keeper: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Login(kind, account) => {
            let mut out = std::io::stderr();
            let result = oauth_keeper::login(&keeper, kind, account.as_deref(), &mut out).await;
            keeper.stop_pools().await;
            match result {
                Ok(id) => {
                    eprintln!("signed in: {kind} account {id}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keeper: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            let running = match keeper.serve().await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("keeper: {e}");
                    return ExitCode::FAILURE;
                }
            };
            wait_for_signal().await;
            tracing::info!("shutting down");
            running.shutdown().await;
            ExitCode::SUCCESS
        }
    }
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
