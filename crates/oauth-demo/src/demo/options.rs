//! The command line of `cargo xtask demo`.

use std::time::Duration;

pub(crate) const HELP: &str = "\
usage: cargo xtask demo [--duration SECS] [--credentials N] [--concurrency N] [--linger SECS]

Runs a pool of OAuth credentials against a fake token endpoint, a fake AI provider and a webhook
receiver, all in this process on 127.0.0.1, while a script injects the faults a real deployment
meets: a token about to expire, a rate limit, a revoked grant, a rotation, bad requests, slow
answers and server errors. Shows a live progress line, then a report and the checks it made.
Exits non-zero if a check fails.

options:
  --duration SECS     how long traffic runs (default 20, at least 6, at most 1800)
  --credentials N     credentials in the pool (default 6, at least 4, at most 64)
  --concurrency N     concurrent callers (default 16, at most 1024)
  --linger SECS       keep serving /metrics and /health this long after the report (default 0)
  -h, --help          this text
";

/// What the demo was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) duration: Duration,
    pub(crate) credentials: usize,
    pub(crate) concurrency: usize,
    pub(crate) linger: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(20),
            credentials: 6,
            concurrency: 16,
            linger: Duration::ZERO,
        }
    }
}

impl Options {
    /// Parses the arguments after `demo`; `Ok(None)` means help was asked for.
    pub(crate) fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            if matches!(flag, "-h" | "--help") {
                return Ok(None);
            }
            let mut value = |name: &str| -> Result<u64, String> {
                let text = inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value (see --help)"))?;
                text.parse()
                    .map_err(|_| format!("{name}: `{text}` is not a whole number"))
            };
            match flag {
                "--duration" => {
                    options.duration =
                        Duration::from_secs(in_range("--duration", value(flag)?, 6, 1800)?);
                }
                "--credentials" => {
                    options.credentials = to_usize(in_range("--credentials", value(flag)?, 4, 64)?);
                }
                "--concurrency" => {
                    options.concurrency =
                        to_usize(in_range("--concurrency", value(flag)?, 1, 1024)?);
                }
                "--linger" => {
                    options.linger =
                        Duration::from_secs(in_range("--linger", value(flag)?, 0, 86_400)?);
                }
                other => return Err(format!("demo: unknown option `{other}` (see --help)")),
            }
        }
        Ok(Some(options))
    }
}

fn in_range(name: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{name} must be between {min} and {max}, not {value}"
        ))
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Options::parse(&args)
    }

    #[test]
    fn defaults_flags_and_errors() {
        assert_eq!(parse(&[]), Ok(Some(Options::default())));
        let o = parse(&["--duration", "8", "--credentials=5", "--concurrency", "4"])
            .expect("valid")
            .expect("not help");
        assert_eq!(o.duration, Duration::from_secs(8));
        assert_eq!((o.credentials, o.concurrency), (5, 4));
        assert_eq!(parse(&["--help"]), Ok(None));
        assert!(parse(&["--credentials", "3"]).is_err());
        assert!(parse(&["--duration"]).is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
    }
}
