//! The crate's layers point only down: this test reads every `crate::` path in
//! `lexigram/src` and fails on one that reaches a higher layer than the module it is in.
//!
//! The order (lowest first) is the map in `docs/architecture.md`; keep both in step. A module
//! may use its own layer and every layer below it. `pub use` lines are facade re-exports (a
//! public path kept for users), not dependencies, and are not checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Lowest first. A path is placed by its longest listed prefix.
const LAYERS: &[&[&str]] = &[
    // Value types every layer uses, and the errors.
    &["message", "error", "config::secret", "config::Secret"],
    // Which message is being handled; fault points for crash tests.
    &["context", "fault"],
    // Calling user code: permit, timeout, panic isolation, retry, give up.
    &["delivery"],
    // Event types, codecs and upcasters.
    &["schema"],
    // The snapshot type, trait, policy and the in-memory store.
    &["snapshot"],
    // Event stores (memory, SQLite, PostgreSQL) and their snapshot stores.
    &["store"],
    // Aggregates.
    &["aggregate"],
    // Loading and saving aggregates.
    &["snapshot::manager", "repository"],
    // Checkpointed runners over the global log.
    &["subscription"],
    // The buses and their middleware.
    &["middleware", "bus", "command", "query", "event"],
    // Durable reactions.
    &["projection", "saga", "outbox", "webhook"],
    // Wiring: registrations, configuration, the container and the app.
    &["registration", "config", "module"],
    // What sits on top: test suites, the crate root and the macros' private API.
    &["testing", "lib", "__private"],
];

fn layer_of(path: &str) -> Option<(usize, String)> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len()).rev().find_map(|n| {
        let prefix = segments[..n].join("::");
        LAYERS
            .iter()
            .position(|layer| layer.contains(&prefix.as_str()))
            .map(|rank| (rank, prefix))
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `store/sqlite/mod.rs` → `store::sqlite`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Every `crate::a::b::C` path on a line, as `a::b::C`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at + "crate::".len()..];
        let path: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_owned();
        if !path.is_empty() {
            found.push(path);
        }
        rest = tail;
    }
    found
}

#[test]
fn every_crate_import_points_down_the_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges = 0;
    let mut upward = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some((from_rank, from)) = layer_of(&module) else {
            upward.push(format!(
                "{module}: not in any layer; add it to LAYERS and docs/architecture.md"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || code.starts_with("pub use ") {
                continue;
            }
            for path in crate_paths(code) {
                let Some((to_rank, to)) = layer_of(&path) else {
                    continue;
                };
                if from == to || from_rank == to_rank {
                    continue;
                }
                edges += 1;
                if to_rank > from_rank {
                    upward.push(format!(
                        "{}:{}: `{module}` (layer {from_rank}, `{from}`) uses `crate::{path}` (layer {to_rank}, `{to}`)",
                        file.strip_prefix(&src).unwrap().display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(edges > 50, "the scan found the crate's imports ({edges})");
    assert!(
        upward.is_empty(),
        "{} import(s) point up the layer order:\n{}",
        upward.len(),
        upward.join("\n")
    );
}

#[test]
fn the_scan_sees_an_upward_import_and_skips_comments_and_re_exports() {
    let (rank, _) = layer_of("aggregate::root").unwrap();
    let paths: Vec<String> = [
        "use crate::bus::Registry;",
        "let m = crate::context::caused_metadata();",
    ]
    .iter()
    .flat_map(|line| crate_paths(line))
    .collect();
    assert_eq!(paths, ["bus::Registry", "context::caused_metadata"]);
    assert!(
        layer_of(&paths[0]).unwrap().0 > rank,
        "the bus is above aggregates"
    );
    assert!(
        layer_of(&paths[1]).unwrap().0 < rank,
        "the context is below them"
    );
    assert_eq!(layer_of("config::Secret").map(|l| l.0), Some(0));
    assert_eq!(
        layer_of("config::EventsConfig").map(|l| l.0),
        layer_of("module").map(|l| l.0)
    );
}

#[test]
fn the_layer_map_in_the_docs_lists_every_layer() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md"),
    )
    .unwrap();
    for module in LAYERS.iter().flat_map(|layer| layer.iter()) {
        // An item placed on its own (a type re-exported by its module) needs no line.
        if module
            .rsplit("::")
            .next()
            .is_some_and(|last| last.starts_with(char::is_uppercase))
        {
            continue;
        }
        assert!(
            docs.contains(&format!("`{module}`")),
            "docs/architecture.md does not place `{module}`"
        );
    }
}
