//! A small OpenMetrics text parser, so the exposition tests check parsed values rather than
//! substrings.

use std::collections::{BTreeMap, HashMap};

/// One metric family's metadata lines.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Meta {
    pub(crate) help: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) unit: Option<String>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) families: HashMap<String, Meta>,
    pub(crate) samples: Vec<Sample>,
}

impl Exposition {
    /// Parses OpenMetrics text; panics (failing the test) on anything malformed.
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.pop(), Some("# EOF"), "must end with # EOF");
        for line in lines {
            if let Some(rest) = line.strip_prefix("# ") {
                let (what, rest) = rest.split_once(' ').expect("metadata kind");
                let (name, value) = rest.split_once(' ').expect("metadata name and value");
                let meta = out.families.entry(name.to_owned()).or_default();
                let slot = match what {
                    "HELP" => &mut meta.help,
                    "TYPE" => &mut meta.kind,
                    "UNIT" => &mut meta.unit,
                    other => panic!("unknown metadata line {other}"),
                };
                assert!(slot.is_none(), "duplicate {what} for {name}");
                *slot = Some(value.to_owned());
            } else {
                out.samples.push(parse_sample(line));
            }
        }
        for s in &out.samples {
            assert!(
                out.family_of(&s.name).is_some(),
                "sample {} has no TYPE line",
                s.name
            );
        }
        out
    }

    /// The family a sample name belongs to (its name, or its name minus a known suffix).
    pub(crate) fn family_of(&self, sample: &str) -> Option<&Meta> {
        let kind = |name: &str| self.families.get(name).and_then(|m| m.kind.clone());
        if let Some(m) = self.families.get(sample)
            && matches!(
                m.kind.as_deref(),
                Some("gauge" | "stateset" | "info" | "unknown")
            )
        {
            return Some(m);
        }
        for (suffix, kinds) in [
            ("_total", &["counter"][..]),
            ("_created", &["counter", "histogram"][..]),
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram"][..]),
            ("_count", &["histogram"][..]),
        ] {
            if let Some(base) = sample.strip_suffix(suffix)
                && kind(base).is_some_and(|k| kinds.contains(&k.as_str()))
            {
                return self.families.get(base);
            }
        }
        None
    }

    /// The value of the one sample named `name` with exactly these labels.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "exactly one sample {name}{want:?}");
        found[0].value
    }

    /// Samples named `name`.
    pub(crate) fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

pub(crate) fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_at(line.find(' ').expect("sample value")),
    };
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            let (start, c) = chars.next().expect("label or }");
            if c == '}' {
                end = start;
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = body[start..].find('=').expect("label =") + start;
            let key = body[start..eq].to_owned();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value quote");
            let mut value = String::new();
            loop {
                match chars.next().expect("closing quote").1 {
                    '"' => break,
                    '\\' => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            assert!(labels.insert(key, value).is_none(), "duplicate label");
        }
        rest = &body[end + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("bad value {v:?}: {e}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

#[test]
fn parser_reads_labels_escapes_and_special_values() {
    let text = "# HELP m A gauge.\n# TYPE m gauge\nm{a=\"x\\\"y\",b=\"1,2\"} NaN\nm 2.5\n# EOF\n";
    let e = Exposition::parse(text);
    assert!(e.value("m", &[("a", "x\"y"), ("b", "1,2")]).is_nan());
    assert_eq!(e.value("m", &[]), 2.5);
    assert_eq!(e.families["m"].help.as_deref(), Some("A gauge."));
}
