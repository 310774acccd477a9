//! The report printed after the run, and the checks that decide the exit status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_manager::webhooks::{DeliveryStats, MonitoringConfig, ShutdownReport, WebhookEvent};
use oauth_manager::{Event, EventKind, OAuthKeyManager};
use oauth_testkit::provider::ProviderStats;
use oauth_testkit::token_server::{Outcome, SeenRequest, TokenServerStats};
use oauth_testkit::webhook_receiver::ReceivedRequest;

use super::script::{Account, Cast, EXPIRING, RATE_LIMITED, REVOKED, ROTATED, Role};
use super::traffic::{CredentialTally, EventLog, Traffic};

/// `12345` as `12,345`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration as `4.0 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A latency in microseconds, in the unit that reads best.
fn latency(us: u32) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", f64::from(us) / 1e3),
        _ => format!("{:.2} s", f64::from(us) / 1e6),
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A plain text table with aligned columns (numbers right-aligned).
struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            right: columns.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::from(" ");
            for ((cell, width), right) in cells.iter().zip(&widths).zip(&self.right) {
                let pad = " ".repeat(width - cell.chars().count());
                if *right {
                    let _ = write!(out, " {pad}{cell} ");
                } else {
                    let _ = write!(out, " {cell}{pad} ");
                }
            }
            out.trim_end().to_owned()
        };
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
        let mut out = vec![line(&headers), line(&rule)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// Everything the report and the checks read, gathered once traffic has stopped.
pub(crate) struct Findings<'a> {
    pub(crate) cast: &'a Cast,
    pub(crate) pool: &'a OAuthKeyManager,
    pub(crate) monitoring: &'a MonitoringConfig,
    pub(crate) start_utc: DateTime<Utc>,
    pub(crate) elapsed: Duration,
    pub(crate) traffic: &'a Traffic,
    pub(crate) tallies: BTreeMap<String, CredentialTally>,
    pub(crate) token_stats: TokenServerStats,
    pub(crate) token_log: Vec<SeenRequest>,
    pub(crate) provider: ProviderStats,
    pub(crate) webhooks: Vec<ReceivedRequest>,
    pub(crate) delivery: DeliveryStats,
    pub(crate) shutdown: ShutdownReport,
    pub(crate) events: EventLog,
    pub(crate) metrics: Scrape,
    pub(crate) health: Scrape,
    pub(crate) script_failures: Vec<String>,
    /// The webhook signing secret's text (must appear nowhere).
    pub(crate) secret: String,
}

/// One GET of the demo's own HTTP endpoint.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
    pub(crate) error: Option<String>,
}

/// One line of the final checklist.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

fn check(ok: bool, text: impl Into<String>) -> Check {
    Check {
        ok,
        text: text.into(),
    }
}

impl Findings<'_> {
    fn account(&self, index: usize) -> &Account {
        &self.cast.accounts[index]
    }

    /// Successful refreshes and invalid_grant answers the token endpoint gave `client`.
    fn refreshes_of(&self, client: &str) -> (u64, u64) {
        let mine = self
            .token_log
            .iter()
            .filter(|r| r.client_id.as_deref() == Some(client));
        mine.fold((0, 0), |(ok, invalid), r| match r.outcome {
            Outcome::Issued => (ok + 1, invalid),
            Outcome::InvalidGrant { .. } => (ok, invalid + 1),
            _ => (ok, invalid),
        })
    }

    fn offset(&self, at: DateTime<Utc>) -> Duration {
        (at - self.start_utc).to_std().unwrap_or_default()
    }

    fn events_of<'e>(&'e self, id: &'e str) -> impl Iterator<Item = &'e Event> + 'e {
        self.events
            .events
            .iter()
            .filter(move |e| e.credential().is_some_and(|c| c.as_str() == id))
    }

    fn webhook_fields(request: &ReceivedRequest) -> (String, String, String) {
        let json = request.json().unwrap_or_default();
        let text = |key: &str| {
            json.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_owned()
        };
        (text("type"), text("credential_id"), text("message"))
    }

    /// Prints the report.
    pub(crate) fn print(&self) {
        println!(
            "\nPer credential (attempts as the callers saw them; latency of the provider call)"
        );
        println!("{}", self.credentials_table());
        println!("{}", self.totals());

        println!(
            "\nWebhooks received ({}; signed with the demo's whsec_ secret, verified on arrival)",
            self.webhooks.len()
        );
        println!("{}", self.webhooks_table());
        let d = &self.delivery;
        println!(
            "  notifier: {} delivered, {} retried, {} dropped, {} failed, {} not in the event filter",
            d.delivered, d.retried, d.dropped, d.failed, d.filtered
        );

        let t = &self.token_stats;
        let invalid: Vec<String> = self
            .cast
            .accounts
            .iter()
            .filter(|a| self.refreshes_of(&a.id).1 > 0)
            .map(|a| a.id.clone())
            .collect();
        println!("\nToken endpoint");
        println!(
            "  {} grants issued · {} refresh{} · {} invalid_grant{} · {} reused refresh tokens",
            t.grants_issued,
            t.refreshes,
            if t.refreshes == 1 { "" } else { "es" },
            t.invalid_grants,
            if invalid.is_empty() {
                String::new()
            } else {
                format!(" ({})", invalid.join(", "))
            },
            t.reused_refresh_tokens,
        );

        let p = &self.provider;
        println!("\nAI provider");
        println!(
            "  {} requests · {} answered · {} × 401 · {} × 429 · {} × 5xx · {} × 400 · {} slowed",
            group(p.requests),
            group(p.ok),
            p.unauthorized,
            p.rate_limited,
            p.server_errors,
            p.bad_requests,
            p.slow,
        );

        println!("\nPrometheus exposition (GET /metrics, excerpt)");
        let lines = |keep: &dyn Fn(&str) -> bool, n: usize| -> Vec<&str> {
            let mut picked: Vec<&str> = self.metrics.body.lines().filter(|l| keep(l)).collect();
            picked.sort_unstable();
            picked.truncate(n);
            picked
        };
        let requests = |l: &str| l.contains("requests_total{");
        let success = |l: &str| l.contains("outcome=\"success\"");
        let mut excerpt = lines(&|l| requests(l) && success(l), 6);
        excerpt.extend(lines(&|l| requests(l) && !success(l), 4));
        excerpt.extend(lines(
            &|l| l.contains("refreshes_total{") && !l.ends_with(" 0"),
            3,
        ));
        if excerpt.is_empty() {
            println!("  (no requests_total lines: {:?})", self.metrics.error);
        }
        for line in excerpt {
            println!("  {line}");
        }
    }

    fn credentials_table(&self) -> String {
        let mut table = Table::new(&[
            ("Credential", false),
            ("Role", false),
            ("State now", false),
            ("Requests", true),
            ("Success", true),
            ("p50", true),
            ("p95", true),
            ("p99", true),
            ("Refreshes", true),
        ]);
        let empty = CredentialTally::default();
        for account in &self.cast.accounts {
            let tally = self.tallies.get(&account.id).unwrap_or(&empty);
            let state = match self.pool.credential_health(&account.id) {
                Some(h) => h.state.as_str().replace('_', " "),
                None if account.role == Role::RotatedOut => "decommissioned".to_owned(),
                None => "not in the pool".to_owned(),
            };
            let mut lat: Vec<u32> = tally.samples.iter().map(|s| s.latency_us).collect();
            lat.sort_unstable();
            let pct = |p| percentile(&lat, p).map_or_else(|| "-".to_owned(), latency);
            let (ok, invalid) = self.refreshes_of(&account.id);
            let refreshes = if invalid > 0 {
                format!("{ok} + {invalid} invalid_grant")
            } else {
                ok.to_string()
            };
            table.row(vec![
                account.id.clone(),
                account.label.clone(),
                state,
                group(tally.attempts),
                percent(tally.ok, tally.attempts),
                pct(50.0),
                pct(95.0),
                pct(99.0),
                refreshes,
            ]);
        }
        table.render()
    }

    fn totals(&self) -> String {
        let t = self.traffic;
        let ok = t.ok.load(Ordering::Relaxed);
        let rejected = t.rejected.load(Ordering::Relaxed);
        let failed = t.failed.load(Ordering::Relaxed);
        let calls = t.completed();
        let mut out = format!(
            "\n  {} calls in {} ({}/s), {} tokens used\n  {} answered ({} after failing over), \
             {} rejected as bad requests (400), {} failed",
            group(calls),
            secs(self.elapsed),
            group((calls as f64 / self.elapsed.as_secs_f64().max(0.001)).round() as u64),
            group(t.tokens.load(Ordering::Relaxed)),
            group(ok),
            group(t.failed_over.load(Ordering::Relaxed)),
            rejected,
            failed,
        );
        for (what, n) in t.errors() {
            let _ = write!(out, "\n    {n} × {what}");
        }
        out
    }

    fn webhooks_table(&self) -> String {
        let mut table = Table::new(&[
            ("At", true),
            ("Type", false),
            ("Credential", false),
            ("Signature", false),
            ("Message", false),
        ]);
        for request in &self.webhooks {
            let (kind, id, message) = Self::webhook_fields(request);
            let at = request
                .json()
                .and_then(|j| {
                    j.get("timestamp")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                })
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map_or_else(
                    || "-".to_owned(),
                    |t| format!("{:.1}s", self.offset(t.with_timezone(&Utc)).as_secs_f64()),
                );
            let signature = match &request.verification {
                Ok(()) => "verified".to_owned(),
                Err(reason) => format!("REJECTED ({reason})"),
            };
            table.row(vec![at, kind, id, signature, message]);
        }
        table.render()
    }

    /// The checks; a failed one makes the demo exit non-zero.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let t = &self.token_stats;
        checks.push(check(
            t.reused_refresh_tokens == 0,
            format!(
                "no refresh token was ever presented twice (token endpoint: {} reused)",
                t.reused_refresh_tokens
            ),
        ));

        let expiring = &self.account(EXPIRING).id;
        let (once, _) = self.refreshes_of(expiring);
        checks.push(check(
            once == 1 && t.refreshes == 1,
            format!(
                "{expiring} was refreshed exactly once while every caller wanted it, no other \
                 credential needed a refresh (token endpoint: {} refresh{})",
                t.refreshes,
                if t.refreshes == 1 { "" } else { "es" }
            ),
        ));

        let revoked = &self.account(REVOKED).id;
        let (_, invalid) = self.refreshes_of(revoked);
        let needs_reauth = self
            .pool
            .credential_health(revoked)
            .is_some_and(|h| h.needs_reauthorization);
        checks.push(check(
            invalid == 1 && t.invalid_grants == 1 && needs_reauth,
            format!(
                "invalid_grant came only for {revoked}, whose grant was revoked, once ({} in \
                 all); it now needs re-authorization{}",
                t.invalid_grants,
                if needs_reauth { "" } else { " (NOT flagged)" }
            ),
        ));

        checks.push(self.cooldown_check());
        checks.push(self.rotation_check());
        checks.push(self.request_scoped_check());

        let refreshed_events = self
            .events
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Refreshed { .. }))
            .count() as u64;
        checks.push(check(
            self.events.lost == 0 && refreshed_events == t.refreshes,
            format!(
                "the event subscriber missed nothing ({} events, {} lost) and saw one refreshed \
                 event per refresh ({refreshed_events})",
                self.events.events.len(),
                self.events.lost
            ),
        ));
        checks.push(self.webhook_check());

        let metrics_ok = self.metrics.status == 200
            && self.metrics.content_type == oauth_manager::metrics::OPENMETRICS_CONTENT_TYPE
            && self.metrics.body.contains("requests_total{");
        let health: serde_json::Value = serde_json::from_str(&self.health.body).unwrap_or_default();
        let in_pool = self.pool.credential_ids().len() as u64;
        let health_ok = self.health.status == 200
            && health
                .get("total_credentials")
                .and_then(serde_json::Value::as_u64)
                == Some(in_pool);
        checks.push(check(
            metrics_ok && health_ok,
            format!(
                "/metrics answered {} in the OpenMetrics format, /health answered {} with all {in_pool} credentials",
                self.metrics.status, self.health.status
            ),
        ));

        checks.push(self.secrets_check());

        checks.push(check(
            self.script_failures.is_empty(),
            if self.script_failures.is_empty() {
                "every step of the script ran".to_owned()
            } else {
                format!("script steps failed: {}", self.script_failures.join("; "))
            },
        ));
        checks
    }

    /// Token values (the token endpoint's are `tk-at-…` and `tk-rt-…`) and the signing secret
    /// must not appear in anything the pool exposes.
    fn secrets_check(&self) -> Check {
        let mut exposed = vec![
            ("/metrics", self.metrics.body.clone()),
            ("/health", self.health.body.clone()),
            ("events", format!("{:?}", self.events.events)),
            ("call errors", format!("{:?}", self.traffic.errors())),
        ];
        for request in &self.webhooks {
            exposed.push((
                "webhooks",
                format!(
                    "{:?} {}",
                    request.headers,
                    String::from_utf8_lossy(&request.body)
                ),
            ));
        }
        let mut leaks: Vec<&str> = exposed
            .iter()
            .filter(|(_, text)| {
                text.contains("tk-at-") || text.contains("tk-rt-") || text.contains(&self.secret)
            })
            .map(|(place, _)| *place)
            .collect();
        leaks.dedup();
        check(
            leaks.is_empty(),
            if leaks.is_empty() {
                "no token or signing secret appears in /metrics, /health, events, webhooks or \
                 errors"
                    .to_owned()
            } else {
                format!("secrets leaked into: {}", leaks.join(", "))
            },
        )
    }

    fn cooldown_check(&self) -> Check {
        let id = &self.account(RATE_LIMITED).id;
        let cooldowns: Vec<(Duration, Duration)> = self
            .events_of(id)
            .filter_map(|e| match e.kind {
                EventKind::CooledDown { until, .. } => Some((
                    self.offset(e.at),
                    (until - e.at).to_std().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        let wanted = [self.cast.retry_after, self.cast.reset_hint];
        let lengths_ok = cooldowns.len() == wanted.len()
            && cooldowns
                .iter()
                .zip(wanted)
                .all(|((_, got), want)| got.abs_diff(want) <= Duration::from_millis(20));
        // No attempt may start inside a cooldown (50 ms of slack for calls already on their way).
        let slack = Duration::from_millis(50);
        let during: usize = self.tallies.get(id).map_or(0, |tally| {
            tally
                .samples
                .iter()
                .filter(|s| {
                    let start = Duration::from_millis(u64::from(s.start_ms));
                    cooldowns
                        .iter()
                        .any(|(at, len)| start > *at + slack && start + slack < *at + *len)
                })
                .count()
        });
        let lengths: Vec<String> = cooldowns.iter().map(|(_, d)| secs(*d)).collect();
        check(
            lengths_ok && during == 0,
            format!(
                "{id} cooled down for exactly Retry-After ({}) and the reset hint ({}): cooldowns \
                 [{}], {during} requests sent to it meanwhile",
                secs(self.cast.retry_after),
                secs(self.cast.reset_hint),
                lengths.join(", ")
            ),
        )
    }

    fn rotation_check(&self) -> Check {
        let old = &self.account(ROTATED).id;
        let new = &self.cast.accounts[self.cast.replacement].id;
        let started = self.events_of(old).find_map(|e| match e.kind {
            EventKind::RotationStarted { .. } => Some(e.at),
            _ => None,
        });
        let ended = self.events_of(old).find_map(|e| match e.kind {
            EventKind::Decommissioned { .. } => Some(e.at),
            _ => None,
        });
        let served = self.tallies.get(new).map_or(0, |t| t.ok);
        let gone = self.pool.credential_health(old).is_none();
        let after = match (started, ended) {
            (Some(s), Some(e)) => (e - s).to_std().ok(),
            _ => None,
        };
        check(
            gone && served > 0 && after.is_some_and(|d| d >= self.cast.grace),
            format!(
                "{old} was decommissioned {} after its rotation started (grace {}), and {new} \
                 took over ({} requests answered)",
                after.map_or_else(|| "NOT".to_owned(), secs),
                secs(self.cast.grace),
                group(served),
            ),
        )
    }

    fn request_scoped_check(&self) -> Check {
        let rejected = self.traffic.rejected.load(Ordering::Relaxed);
        let want = u64::from(self.cast.bad_requests);
        let id = &self.account(self.cast.noisy).id;
        let got = self
            .tallies
            .get(id)
            .and_then(|t| t.failures.get("request_scoped").copied())
            .unwrap_or(0);
        // Nothing else fails on this credential until the 503s are scripted.
        let window = self.cast.bad_requests_at..self.cast.server_errors_at;
        let penalties = self
            .events_of(id)
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::BackedOff { .. }
                        | EventKind::CooledDown { .. }
                        | EventKind::BecameUnhealthy { .. }
                        | EventKind::NeedsReauthorization { .. }
                ) && window.contains(&self.offset(e.at))
            })
            .count();
        check(
            rejected == want && got == want && penalties == 0,
            format!(
                "the {want} bad requests on {id} came back at once as request-scoped errors \
                 ({rejected} rejected, no failover) and penalized no credential ({penalties} \
                 backoffs)"
            ),
        )
    }

    fn webhook_check(&self) -> Check {
        let mut received: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut rejected = 0;
        for request in &self.webhooks {
            if request.verification.is_err() || !request.is_accepted() {
                rejected += 1;
                continue;
            }
            let (kind, id, _) = Self::webhook_fields(request);
            *received.entry((kind, id)).or_default() += 1;
        }
        let mut missing = Vec::new();
        let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
        for event in &self.events.events {
            let Some(webhook) = WebhookEvent::from_event(event) else {
                continue;
            };
            if !self.monitoring.wants(webhook.event_type) {
                continue;
            }
            let id = webhook
                .credential_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            *expected
                .entry((webhook.event_type.as_str().to_owned(), id))
                .or_default() += 1;
        }
        for ((kind, id), n) in &expected {
            let got = received
                .get(&(kind.clone(), id.clone()))
                .copied()
                .unwrap_or(0);
            if got < *n {
                missing.push(format!("{kind} for {id} ({got} of {n})"));
            }
        }
        let script = [
            ("refresh", &self.account(EXPIRING).id),
            ("needs_reauthorization", &self.account(REVOKED).id),
            ("rotation", &self.account(ROTATED).id),
            ("decommissioned", &self.account(ROTATED).id),
        ];
        for (kind, id) in script {
            if !received.contains_key(&(kind.to_owned(), id.clone())) {
                missing.push(format!("{kind} for {id}"));
            }
        }
        let d = &self.delivery;
        let clean = d.dropped == 0 && d.failed == 0 && d.discarded == 0 && !self.shutdown.timed_out;
        check(
            missing.is_empty() && rejected == 0 && clean,
            format!(
                "every event worth a webhook arrived signed and verified ({} expected, {} \
                 received, {rejected} rejected, {} dropped, {} failed){}",
                expected.values().sum::<u64>(),
                received.values().sum::<u64>(),
                d.dropped,
                d.failed,
                if missing.is_empty() {
                    String::new()
                } else {
                    format!("; missing: {}", missing.join(", "))
                }
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_and_latency_formats() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(latency(850), "850 µs");
        assert_eq!(latency(1_250), "1.2 ms");
        assert_eq!(latency(1_500_000), "1.50 s");
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(0, 0), "-");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&[("Name", false), ("N", true)]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long name".into(), "1,000".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "  a              1");
        assert_eq!(lines[3], "  long name  1,000");
    }
}
