//! The architecture invariants of ARCHITECTURE.md, checked by reading the `use` lines and
//! paths of every file under src/: which module may import which, which may touch which
//! external crate, and no import cycle between the top-level modules.
//!
//! The check is textual (comment lines are skipped, everything else counts, unit tests
//! included), so it is strict: a rule broken only in a test module is still broken.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the library (src/<name>.rs or src/<name>/).
const MODULES: &[&str] = &[
    "app",
    "backend",
    "config",
    "domains",
    "error",
    "hardening",
    "router",
    "rpc",
    "schema",
    "scrub",
    "session",
    "telemetry",
];

/// External crates only one module may use.
const OWNED_CRATES: &[(&str, &[&str])] = &[
    ("reqwest", &["backend"]),
    ("sentry", &["telemetry"]),
    ("keyring_core", &["session/store"]),
    ("zbus_secret_service_keyring_store", &["session/store"]),
    ("linux_keyutils_keyring_store", &["session/store"]),
    ("apple_native_keyring_store", &["session/store"]),
    ("windows_native_keyring_store", &["session/store"]),
];

struct Source {
    /// Relative to src/, with `/` separators.
    path: String,
    /// The top-level module the file belongs to (`None` for lib.rs and main.rs).
    module: Option<String>,
    /// The file without its comment lines.
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    assert!(files.len() > 10, "src/ has the library's files");
    files
        .into_iter()
        .map(|file| {
            let path = file
                .strip_prefix(&root)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let first = path.split('/').next().unwrap_or_default();
            let name = first.trim_end_matches(".rs");
            let module = MODULES.contains(&name).then(|| name.to_string());
            let text = std::fs::read_to_string(&file).expect("source file");
            let code = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            Source { path, module, code }
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The crate paths a file names, as `module/sub/...` strings: `crate::session::gate::Gate`
/// gives `session/gate/Gate`; `use crate::{config::Config, error}` gives `config/Config` and
/// `error`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `core_sidecar::`, `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                paths.insert(path_of(item));
            }
        } else {
            paths.insert(path_of(rest));
        }
    }
    paths.retain(|p| !p.is_empty());
    paths
}

/// The index of the `}` that closes a group whose `{` was just consumed.
fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(text[start..].trim());
    items
}

/// `session::gate::Gate;...` -> `session/gate/Gate`.
fn path_of(text: &str) -> String {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

fn top_module(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

fn uses_crate(code: &str, name: &str) -> bool {
    let pattern = format!("{name}::");
    code.match_indices(&pattern).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

/// The file's module, or its sub-module path for the rules that name one (`session/store`).
fn within(source: &Source, owner: &str) -> bool {
    source.path == format!("{owner}.rs") || source.path.starts_with(&format!("{owner}/"))
}

/// Every broken rule, as one line each.
fn violations(sources: &[Source]) -> Vec<String> {
    let mut broken = Vec::new();
    for source in sources {
        let paths = crate_paths(&source.code);
        let imports = |module: &str| paths.iter().any(|p| top_module(p) == module);
        let file = &source.path;
        match source.module.as_deref() {
            Some("rpc") => {
                for forbidden in ["session", "domains", "backend", "router", "app"] {
                    if imports(forbidden) {
                        broken.push(format!(
                            "{file}: the transport imports crate::{forbidden} (it knows nothing of sessions, domains or upstreams)"
                        ));
                    }
                }
            }
            Some("domains") => {
                if uses_crate(&source.code, "jsonrpsee") {
                    broken.push(format!("{file}: a domain sees JSON-RPC types (jsonrpsee)"));
                }
                if paths.iter().any(|p| p.starts_with("session/store")) {
                    broken.push(format!(
                        "{file}: a domain reaches the keyring (session::store)"
                    ));
                }
            }
            Some("error") => {
                for external in ["jsonrpsee", "sentry"] {
                    if uses_crate(&source.code, external) {
                        broken.push(format!(
                            "{file}: error is transport-free, but uses {external}"
                        ));
                    }
                }
                if let Some(path) = paths.iter().next() {
                    broken.push(format!(
                        "{file}: error is a leaf, but imports crate::{path}"
                    ));
                }
            }
            Some("scrub") => {
                if let Some(path) = paths.iter().next() {
                    broken.push(format!(
                        "{file}: scrub is a leaf, but imports crate::{path}"
                    ));
                }
            }
            _ => {}
        }
        if source.path != "config.rs"
            && (source.code.contains("env::var") || source.code.contains("env::vars"))
        {
            broken.push(format!(
                "{file}: reads the environment; every setting is read in config.rs"
            ));
        }
        for (external, owners) in OWNED_CRATES {
            if uses_crate(&source.code, external) && !owners.iter().any(|o| within(source, o)) {
                broken.push(format!(
                    "{file}: uses {external}, which only {} may use",
                    owners.join(", ")
                ));
            }
        }
    }
    broken
}

/// The graph of top-level modules: module -> the modules it imports.
fn module_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let Some(module) = &source.module else {
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        for path in crate_paths(&source.code) {
            let target = top_module(&path);
            if target != module && MODULES.contains(&target) {
                edges.insert(target.to_string());
            }
        }
    }
    graph
}

/// A cycle of the graph, if it has one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_import_rules_of_architecture_md_hold() {
    let broken = violations(&sources());
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = module_graph(&sources());
    assert!(
        graph.len() >= MODULES.len(),
        "every module was read: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = "use crate::{config::Config, error::{Error, Result}};\nuse crate::session::gate::Gate;\nlet x = crate::scrub::scrub(y);\nlet y = core_sidecar::app::run;";
    let paths = crate_paths(code);
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        [
            "config/Config",
            "error/",
            "scrub/scrub",
            "session/gate/Gate"
        ]
        .map(|p| p.trim_end_matches('/').to_string())
    );
    assert!(uses_crate("use reqwest::Url;", "reqwest"));
    assert!(!uses_crate("use my_reqwest::Url;", "reqwest"));

    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    graph.insert("b".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);

    // A transport file that imports the session breaks a rule.
    let rogue = Source {
        path: "rpc/rogue.rs".into(),
        module: Some("rpc".into()),
        code: "use crate::session::Sessions;".into(),
    };
    assert_eq!(violations(&[rogue]).len(), 1);
}
