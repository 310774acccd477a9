//! Content negotiation for a `/metrics` endpoint: the format from `Accept`, gzip from
//! `Accept-Encoding`, as Prometheus asks for them.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prometheus_client::registry::Registry;

use crate::prometheus::OPENMETRICS_CONTENT_TYPE;

/// The `Content-Type` of the classic Prometheus text format, version 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// An exposition format `prometheus-client` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// OpenMetrics 1.0.0 text (`# UNIT` lines, `# EOF`).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4: what every scraper, `promtool` and a browser read.
    PrometheusText,
}

impl Format {
    /// The `Content-Type` to serve this format with.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// One media range of an `Accept` header: its type and q-value.
fn media_ranges(accept: &str) -> impl Iterator<Item = (String, Option<String>, f64)> + '_ {
    accept.split(',').filter_map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next()?.to_ascii_lowercase();
        if media.is_empty() {
            return None;
        }
        let mut version = None;
        let mut q = 1.0;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse::<f64>().ok().filter(|q| (0.0..=1.0).contains(q))?,
                "version" => version = Some(v.to_owned()),
                _ => {}
            }
        }
        Some((media, version, q))
    })
}

/// The format to answer a request with `Accept: accept` (`None`: no such header).
///
/// OpenMetrics 1.0.0 text when the request accepts `application/openmetrics-text` (version 1.0.0
/// or unspecified) with a q-value above 0 and at least that of any text format it accepts
/// (`text/plain` in any version, `text/*`, `*/*`); otherwise the classic text format 0.0.4,
/// which every scraper reads (a request for `text/plain; version=1.0.0` also gets 0.0.4, labelled
/// as such, because `prometheus-client` writes no other classic version). Prometheus 2.x and 3.x
/// put OpenMetrics first in their default `Accept`, so they get OpenMetrics; `curl` gets text.
///
/// ```
/// use oauth_metrics::{Format, negotiate_format};
///
/// let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
///     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
/// assert_eq!(negotiate_format(Some(prometheus)), Format::OpenMetrics);
/// assert_eq!(negotiate_format(Some("text/plain;version=0.0.4")), Format::PrometheusText);
/// assert_eq!(negotiate_format(None), Format::PrometheusText);
/// ```
pub fn negotiate_format(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    let mut openmetrics: f64 = 0.0;
    let mut text: f64 = 0.0;
    for (media, version, q) in media_ranges(accept) {
        match media.as_str() {
            "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0") => {
                openmetrics = openmetrics.max(q);
            }
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

/// Whether a request with `Accept-Encoding: accept_encoding` takes a gzip body: `gzip` (or
/// `x-gzip`) with a q-value above 0, or `*` above 0 when gzip is not refused by name.
///
/// ```
/// use oauth_metrics::accepts_gzip;
///
/// assert!(accepts_gzip(Some("gzip")));
/// assert!(accepts_gzip(Some("br;q=1.0, gzip;q=0.8, *;q=0.1")));
/// assert!(!accepts_gzip(Some("gzip;q=0, *")));
/// assert!(!accepts_gzip(Some("identity")));
/// assert!(!accepts_gzip(None));
/// ```
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut named: Option<bool> = None;
    let mut star = false;
    for coding in header.split(',') {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = Some(1.0);
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse::<f64>().ok();
            }
        }
        let yes = q.is_some_and(|q| q > 0.0 && q <= 1.0);
        match name.as_str() {
            "gzip" | "x-gzip" => named = Some(named.unwrap_or(false) || yes),
            "*" => star = yes,
            _ => {}
        }
    }
    named.unwrap_or(star)
}

/// A `/metrics` response: set `Content-Type` to [`content_type`](Self::content_type),
/// `Content-Encoding` to [`content_encoding`](Self::content_encoding) when it is `Some`, and
/// `Vary: Accept, Accept-Encoding`; the body is [`body`](Self::body).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scrape {
    /// The format chosen.
    pub format: Format,
    /// The `Content-Type` header value.
    pub content_type: &'static str,
    /// `Some("gzip")` when the body is compressed.
    pub content_encoding: Option<&'static str>,
    /// The encoded (and maybe compressed) exposition.
    pub body: Vec<u8>,
}

/// Why a scrape could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A metric failed to encode.
    #[error("the metrics could not be encoded")]
    Encode(#[from] std::fmt::Error),
    /// Compressing the body failed.
    #[error("the metrics could not be compressed: {0}")]
    Compress(#[from] std::io::Error),
}

/// Encodes `registry` for a request with these `Accept` and `Accept-Encoding` header values
/// (`None` where the header is absent): the format from [`negotiate_format`], gzip (fast level)
/// when [`accepts_gzip`].
///
/// ```
/// use oauth_metrics::{Format, PrometheusRecorder, encode_scrape};
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::with_prefix("oauth_pool");
/// let _recorder = PrometheusRecorder::new(&mut registry, "anthropic");
/// let scrape = encode_scrape(&registry, Some("application/openmetrics-text"), Some("gzip"))?;
/// assert_eq!(scrape.format, Format::OpenMetrics);
/// assert_eq!(scrape.content_encoding, Some("gzip"));
/// assert_eq!(&scrape.body[..2], &[0x1f, 0x8b]); // the gzip magic number
/// # Ok::<(), oauth_metrics::EncodeError>(())
/// ```
///
/// # Errors
/// When a metric fails to encode, or compression fails.
pub fn encode_scrape(
    registry: &Registry,
    accept: Option<&str>,
    accept_encoding: Option<&str>,
) -> Result<Scrape, EncodeError> {
    let format = negotiate_format(accept);
    let mut text = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
        Format::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
        }
    }
    let (content_encoding, body) = if accepts_gzip(accept_encoding) {
        let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::fast());
        gz.write_all(text.as_bytes())?;
        (Some("gzip"), gz.finish()?)
    } else {
        (None, text.into_bytes())
    };
    Ok(Scrape {
        format,
        content_type: format.content_type(),
        content_encoding,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_3_default_accept_gets_openmetrics() {
        let accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
            application/openmetrics-text;version=0.0.1;q=0.5,\
            text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
            text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(negotiate_format(Some(accept)), Format::OpenMetrics);
    }

    #[test]
    fn text_wins_when_preferred_or_openmetrics_refused() {
        for accept in [
            "application/openmetrics-text;q=0.2,text/plain;q=0.9",
            "application/openmetrics-text;q=0,*/*",
            "application/openmetrics-text;version=0.0.1",
            "*/*",
            "text/html,application/xhtml+xml",
            "",
            "application/openmetrics-text;q=nonsense",
        ] {
            assert_eq!(
                negotiate_format(Some(accept)),
                Format::PrometheusText,
                "{accept}"
            );
        }
        assert_eq!(
            negotiate_format(Some("APPLICATION/OpenMetrics-Text; Version=\"1.0.0\"")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn gzip_refusals_and_wildcards() {
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("*;q=0")));
        assert!(!accepts_gzip(Some("gzip;q=nonsense")));
        assert!(!accepts_gzip(Some("")));
    }
}
