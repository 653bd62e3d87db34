//! The shape of the crate, checked: dependencies between the top-level
//! modules of `src/` run one way, from the HTTP edge through the services
//! to the store and the foundation beneath it, and never in a circle.
//!
//! It reads the source (every `crate::…` path, `use crate::{…}` group and
//! `super::` path that leaves its top-level module) rather than trusting a
//! list kept by hand, so a new import that points the wrong way fails here
//! with the file and line that made it. Unit tests inside modules
//! (`#[cfg(test)] mod …`) are left out: they may reach anywhere to set up.
//! A new top-level module fails until it is given a layer below.

mod checker;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use checker::{Use, cycles, is_ident, read_tree};

/// Layers, lowest first. A module may use its own layer and those below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "config",
            "time_fmt",
            "tls",
            "lifecycle",
            "crypto",
            "compress",
            "precompressed",
            "memory",
            "telemetry",
            "circuit",
            "cache",
            "retry",
            "assets",
            "views",
        ],
    ),
    ("store", &["store", "redis_tier"]),
    (
        "services",
        &[
            "error",
            "audit",
            "sessions",
            "accounts",
            "tiktok",
            "health",
            "landing",
            "monitoring",
        ],
    ),
    ("edge", &["routes", "middleware", "serve", "app", "cli"]),
];

/// Names the store must not mention: it speaks SQL, not HTTP.
const HTTP_TYPES: &[&str] = &["axum::", "http::", "hyper::", "tower_http::"];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// What is wrong with the shape, one line per finding.
fn violations(top: &BTreeSet<String>, uses: &[Use]) -> Vec<String> {
    let mut found = Vec::new();
    for m in top {
        if layer_of(m).is_none() {
            found.push(format!(
                "module `{m}` has no layer: add it to LAYERS in tests/architecture/main.rs"
            ));
        }
    }
    for u in uses {
        if let (Some((lf, nf)), Some((lt, nt))) = (layer_of(&u.from), layer_of(&u.to))
            && lt > lf
        {
            found.push(format!(
                "{}:{}: `{}` ({nf}) uses `{}` ({nt}), a higher layer",
                u.file, u.line, u.from, u.to
            ));
        }
    }
    for cycle in cycles(uses) {
        let witnesses: Vec<String> = uses
            .iter()
            .filter(|u| cycle.contains(&u.from) && cycle.contains(&u.to))
            .map(|u| format!("{} → {} ({}:{})", u.from, u.to, u.file, u.line))
            .collect();
        found.push(format!(
            "cycle between {}: {}",
            cycle.iter().cloned().collect::<Vec<_>>().join(", "),
            witnesses.join("; ")
        ));
    }
    found
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn dependencies_run_one_way_from_the_edge_to_the_foundation() {
    let (top, uses, _) = read_tree(&src_dir());
    let found = violations(&top, &uses);
    assert!(
        found.is_empty(),
        "the module graph has {} problem(s):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_store_speaks_sql_not_http() {
    let (_, _, code_of) = read_tree(&src_dir());
    let mut found = Vec::new();
    for (file, code) in &code_of {
        if !file.starts_with("src/store/") && file != "src/store.rs" {
            continue;
        }
        for (n, line) in code.lines().enumerate() {
            for t in HTTP_TYPES {
                let hit = line
                    .match_indices(t)
                    .any(|(i, _)| i == 0 || !is_ident(line[..i].chars().last().unwrap_or(' ')));
                if hit {
                    found.push(format!("{file}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "HTTP types in the store:\n{}",
        found.join("\n")
    );
}

/// The checker itself: a small tree with one upward import, one cycle and
/// one module without a layer must produce exactly those findings — so the
/// test above cannot pass by reading nothing.
#[test]
fn the_checker_finds_an_upward_import_a_cycle_and_an_unplaced_module() {
    let dir = std::env::temp_dir().join(format!("huntaze-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "pub mod store; pub mod routes; pub mod accounts;");
    // Upward: the store reaching the edge, inside a `use` group.
    write(
        "store/mod.rs",
        "use crate::{time_fmt, routes::labels};\n// crate::app in a comment is not a use\nconst S: &str = \"crate::cli\";\n",
    );
    write("time_fmt.rs", "pub fn now() {}\n");
    // A cycle between two services (accounts ↔ tiktok), one via `super::`.
    write("accounts/mod.rs", "pub mod flow;\n");
    write(
        "accounts/flow.rs",
        "fn f() { super::super::tiktok::go(); }\n",
    );
    write("tiktok.rs", "use crate::accounts::flow;\n");
    write("routes/mod.rs", "use crate::accounts;\n");
    write("gadget.rs", "use crate::store;\n");
    // A test module may reach anywhere.
    write(
        "cache.rs",
        "pub fn c() {}\n#[cfg(test)]\nmod tests {\n    use crate::app::AppBuilder;\n}\n",
    );
    let (top, uses, _) = read_tree(&dir);
    let found = violations(&top, &uses);
    let _ = std::fs::remove_dir_all(&dir);
    let joined = found.join("\n");
    assert!(
        joined.contains("src/store/mod.rs:1: `store` (store) uses `routes` (edge)"),
        "{joined}"
    );
    assert!(
        joined.contains("cycle between accounts, tiktok"),
        "{joined}"
    );
    assert!(joined.contains("module `gadget` has no layer"), "{joined}");
    assert!(
        !joined.contains("app"),
        "comments and strings are not uses: {joined}"
    );
    assert!(
        !joined.contains("`cache`"),
        "test modules are left out: {joined}"
    );
    assert_eq!(found.len(), 3, "{joined}");
}
