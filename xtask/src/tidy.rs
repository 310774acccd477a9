//! `cargo xtask tidy`: the architecture rules that the compiler does not check.
//!
//! - The crate graph is a DAG with `oauth-core` at the bottom: core depends on no crate of ours; a
//!   concern crate (refresh, rotation, metrics, webhooks, store, providers, signin) depends only on
//!   core (and, for its tests, on the testkit); a store backend (PostgreSQL, account files)
//!   implements `oauth-store`'s trait and depends on core and `oauth-store` only; the testkit
//!   depends on core at most; above the facade, adapters (`oauth-http`) and applications (the
//!   keeper, the demo) may depend on the facade; nothing depends on an application or on tooling.
//! - `xtask` depends on no crate of the workspace and on no HTTP stack (no reqwest, hyper or
//!   tokio), so `cargo xtask tidy` builds in seconds on a fresh machine; the demo it runs is its
//!   own binary crate (`oauth-demo`).
//! - Every member inherits the workspace lints (`[lints] workspace = true`).
//!
//! The rules are a pure function over a [`Member`] list, so a test can feed them a bad graph.

use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// What role a workspace crate plays in the layering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    Core,
    Concern,
    /// Implements `oauth-store`'s trait over another medium.
    Backend,
    Testkit,
    Facade,
    /// Libraries above the facade (HTTP client adapters).
    Adapter,
    /// Binaries built on the library (keeper, demo).
    App,
    Tooling,
}

const CONCERNS: [&str; 7] = [
    "oauth-refresh",
    "oauth-rotation",
    "oauth-metrics",
    "oauth-webhooks",
    "oauth-store",
    "oauth-providers",
    "oauth-signin",
];

const BACKENDS: [&str; 2] = ["oauth-store-postgres", "oauth-accounts"];

/// The one concern crate a backend may depend on.
const BACKEND_TRAIT_CRATE: &str = "oauth-store";

pub(crate) fn layer_of(name: &str) -> Option<Layer> {
    match name {
        "oauth-core" => Some(Layer::Core),
        "oauth-testkit" => Some(Layer::Testkit),
        "oauth-manager" => Some(Layer::Facade),
        "oauth-http" => Some(Layer::Adapter),
        "oauth-keeper" | "oauth-demo" => Some(Layer::App),
        "xtask" | "oauth-tests" => Some(Layer::Tooling),
        n if CONCERNS.contains(&n) => Some(Layer::Concern),
        n if BACKENDS.contains(&n) => Some(Layer::Backend),
        _ => None,
    }
}

/// Dependencies that would make `cargo xtask` slow to build on a fresh machine.
const HEAVY_FOR_XTASK: [&str; 5] = ["reqwest", "hyper", "tokio", "axum", "aws-lc-rs"];

/// How a dependency is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DepKind {
    Normal,
    Dev,
    Build,
}

impl fmt::Display for DepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Normal => "dependency",
            Self::Dev => "dev-dependency",
            Self::Build => "build-dependency",
        })
    }
}

/// One workspace member as tidy sees it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) name: String,
    /// Dependencies on other workspace members.
    pub(crate) deps: Vec<(String, DepKind)>,
    /// Names of its other (external) dependencies.
    pub(crate) external: Vec<String>,
    pub(crate) inherits_lints: bool,
}

/// Every rule violation in `members`, as readable lines; empty when tidy.
pub(crate) fn check(members: &[Member]) -> Vec<String> {
    let mut problems = Vec::new();
    for m in members {
        if !m.inherits_lints {
            problems.push(format!(
                "{}: does not inherit the workspace lints (add `[lints] workspace = true`)",
                m.name
            ));
        }
        if m.name == "xtask" {
            for (dep, _) in &m.deps {
                problems.push(format!(
                    "xtask -> {dep}: xtask depends on no crate of the workspace (run binaries through cargo instead)"
                ));
            }
            for dep in &m.external {
                if HEAVY_FOR_XTASK.contains(&dep.as_str()) {
                    problems.push(format!(
                        "xtask -> {dep}: xtask must build without an HTTP stack or async runtime"
                    ));
                }
            }
        }
        let Some(from) = layer_of(&m.name) else {
            problems.push(format!(
                "{}: unknown crate; give it a layer in xtask/src/tidy.rs before adding it",
                m.name
            ));
            continue;
        };
        for (dep, kind) in &m.deps {
            let Some(to) = layer_of(dep) else {
                continue; // reported as unknown on its own line
            };
            if from == Layer::Backend && to == Layer::Concern && dep != BACKEND_TRAIT_CRATE {
                problems.push(format!(
                    "{} -> {dep} ({kind}): a store backend depends only on oauth-core and oauth-store",
                    m.name
                ));
                continue;
            }
            if let Some(why) = forbidden(from, to, *kind) {
                problems.push(format!("{} -> {dep} ({kind}): {why}", m.name));
            }
        }
    }
    problems
}

fn forbidden(from: Layer, to: Layer, kind: DepKind) -> Option<&'static str> {
    use Layer::{Adapter, App, Backend, Concern, Core, Facade, Testkit, Tooling};
    match (from, to) {
        (Tooling, _) => None,
        (_, Tooling) => Some("nothing depends on tooling crates"),
        (_, App) => Some("nothing depends on an application crate"),
        (App, _) => None,
        (Core, _) => Some("oauth-core depends on no crate of ours"),
        (Adapter, Core | Concern | Backend | Facade) => None,
        (_, Facade | Adapter) => {
            Some("only adapters, applications and tooling may depend on oauth-manager")
        }
        (Concern | Backend, Core) | (Testkit, Core) | (Facade, Core | Concern) => None,
        // Checked by name in `check`: a backend may use oauth-store only.
        (Backend, Concern) => None,
        (Concern | Backend | Facade | Adapter, Testkit) if kind == DepKind::Dev => None,
        (Concern | Backend | Facade | Adapter, Testkit) => {
            Some("oauth-testkit is for tests: use it as a dev-dependency")
        }
        (Concern, Concern | Backend) => Some("a concern crate depends only on oauth-core"),
        (Facade, Backend) => Some("the facade does not depend on a store backend"),
        (Backend, Backend) => Some("a store backend depends only on oauth-core and oauth-store"),
        (Testkit, _) => Some("oauth-testkit depends on oauth-core at most"),
    }
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: String,
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    kind: Option<DepKind>,
    path: Option<String>,
}

/// Reads the workspace with `cargo metadata` and each member's manifest.
fn load() -> Result<Vec<Member>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(crate::ci::root())
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Metadata = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cannot read cargo metadata output: {e}"))?;
    let names: Vec<&str> = meta
        .packages
        .iter()
        .filter(|p| meta.workspace_members.contains(&p.id))
        .map(|p| p.name.as_str())
        .collect();
    meta.packages
        .iter()
        .filter(|p| meta.workspace_members.contains(&p.id))
        .map(|p| {
            Ok(Member {
                name: p.name.clone(),
                deps: p
                    .dependencies
                    .iter()
                    .filter(|d| d.path.is_some() && names.contains(&d.name.as_str()))
                    .filter(|d| d.name != p.name)
                    .map(|d| (d.name.clone(), d.kind.unwrap_or(DepKind::Normal)))
                    .collect(),
                external: p
                    .dependencies
                    .iter()
                    .filter(|d| d.path.is_none())
                    .map(|d| d.name.clone())
                    .collect(),
                inherits_lints: inherits_lints(Path::new(&p.manifest_path))?,
            })
        })
        .collect()
}

fn inherits_lints(manifest: &Path) -> Result<bool, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse {}: {e}", manifest.display()))?;
    Ok(doc
        .get("lints")
        .and_then(|l| l.get("workspace"))
        .and_then(toml::Value::as_bool)
        == Some(true))
}

pub(crate) fn run() -> Result<(), String> {
    let members = load()?;
    let problems = check(&members);
    if problems.is_empty() {
        eprintln!("tidy: {} members, crate graph and lints OK", members.len());
        Ok(())
    } else {
        Err(format!("tidy found problems:\n  {}", problems.join("\n  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, deps: &[(&str, DepKind)]) -> Member {
        Member {
            name: name.to_owned(),
            deps: deps.iter().map(|(n, k)| ((*n).to_owned(), *k)).collect(),
            external: Vec::new(),
            inherits_lints: true,
        }
    }

    #[test]
    fn the_real_workspace_is_tidy() {
        let members = load().unwrap_or_else(|e| panic!("{e}"));
        assert!(members.iter().any(|m| m.name == "oauth-core"));
        assert_eq!(check(&members), Vec::<String>::new());
    }

    #[test]
    fn a_good_graph_passes() {
        let g = [
            member("oauth-core", &[]),
            member(
                "oauth-refresh",
                &[
                    ("oauth-core", DepKind::Normal),
                    ("oauth-testkit", DepKind::Dev),
                ],
            ),
            member("oauth-testkit", &[("oauth-core", DepKind::Normal)]),
            member(
                "oauth-manager",
                &[
                    ("oauth-refresh", DepKind::Normal),
                    ("oauth-testkit", DepKind::Dev),
                ],
            ),
            member("oauth-tests", &[("oauth-manager", DepKind::Normal)]),
            member("xtask", &[]),
        ];
        assert_eq!(check(&g), Vec::<String>::new());
    }

    #[test]
    fn forbidden_dependencies_are_reported() {
        let g = [
            member("oauth-core", &[("oauth-refresh", DepKind::Dev)]),
            member("oauth-metrics", &[("oauth-refresh", DepKind::Normal)]),
            member("oauth-webhooks", &[("oauth-testkit", DepKind::Normal)]),
            member("oauth-store", &[("oauth-manager", DepKind::Dev)]),
            member("oauth-testkit", &[("oauth-webhooks", DepKind::Normal)]),
        ];
        let problems = check(&g);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("oauth-core -> oauth-refresh (dev-dependency)"));
        assert!(problems[1].contains("a concern crate depends only on oauth-core"));
        assert!(problems[2].contains("use it as a dev-dependency"));
        assert!(problems[3].contains("only adapters, applications and tooling"));
        assert!(problems[4].contains("oauth-core at most"));
    }

    #[test]
    fn xtask_depends_on_no_library_and_no_http_stack() {
        let mut x = member("xtask", &[("oauth-manager", DepKind::Normal)]);
        x.external = vec!["serde".to_owned(), "reqwest".to_owned()];
        let problems = check(&[x]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("xtask -> oauth-manager"));
        assert!(problems[1].contains("xtask -> reqwest"));
    }

    #[test]
    fn backends_adapters_and_apps_have_their_own_rules() {
        let good = [
            member(
                "oauth-store-postgres",
                &[
                    ("oauth-core", DepKind::Normal),
                    ("oauth-store", DepKind::Normal),
                ],
            ),
            member("oauth-http", &[("oauth-manager", DepKind::Normal)]),
            member(
                "oauth-keeper",
                &[
                    ("oauth-manager", DepKind::Normal),
                    ("oauth-accounts", DepKind::Normal),
                ],
            ),
            member("oauth-demo", &[("oauth-testkit", DepKind::Normal)]),
        ];
        assert_eq!(check(&good), Vec::<String>::new());
        let bad = [
            member("oauth-accounts", &[("oauth-refresh", DepKind::Normal)]),
            member(
                "oauth-manager",
                &[("oauth-store-postgres", DepKind::Normal)],
            ),
            member("oauth-http", &[("oauth-keeper", DepKind::Normal)]),
            member("oauth-providers", &[("oauth-http", DepKind::Normal)]),
        ];
        let problems = check(&bad);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("store backend depends only"));
        assert!(problems[1].contains("facade does not depend on a store backend"));
        assert!(problems[2].contains("application crate"));
        assert!(problems[3].contains("only adapters"));
    }

    #[test]
    fn missing_lints_and_unknown_crates_are_reported() {
        let mut m = member("oauth-core", &[]);
        m.inherits_lints = false;
        let problems = check(&[m, member("oauth-shiny", &[])]);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("workspace lints"));
        assert!(problems[1].contains("unknown crate"));
    }
}
