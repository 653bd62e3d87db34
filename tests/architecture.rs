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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may use its own layer and those below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "config",
            "time_fmt",
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

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    from: String,
    to: String,
    file: String,
    line: usize,
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// Blanks comments, string and char literals (keeping newlines, so line
/// numbers hold) and `#[cfg(test)]` modules.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && !ident_before(b, i) {
            // Raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let end = b[j + 1..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| j + 1 + p + close.len());
            for &c in &b[i..end] {
                out.push(if c == b'\n' { b'\n' } else { b' ' });
            }
            i = end;
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' && is_char_literal(b, i) {
            let end = char_literal_end(b, i);
            out.extend(std::iter::repeat_n(b' ', end - i));
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let code = String::from_utf8(out).expect("blanking keeps UTF-8 boundaries of ASCII");
    without_test_modules(&code)
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `'a'`, `'\n'`, `'\u{1F600}'`, but not a lifetime `'a`.
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            // One UTF-8 character, then a closing quote.
            let len = utf8_len(b[i + 1]);
            b.get(i + 1 + len) == Some(&b'\'')
        }
        None => false,
    }
}

fn char_literal_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    if b[j] == b'\\' {
        j += 2;
        while j < b.len() && b[j] != b'\'' {
            j += 1;
        }
        j + 1
    } else {
        j + utf8_len(b[j]) + 1
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Blanks each `#[cfg(test)]` item's body (a `mod … { … }` or a function).
fn without_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(p) = out[from..].find("#[cfg(test)]") {
        let start = from + p;
        let Some(open) = out[start..].find('{').map(|o| start + o) else {
            break;
        };
        let semi = out[start..].find(';').map(|o| start + o);
        if semi.is_some_and(|s| s < open) {
            // `#[cfg(test)] mod tests;` or a `use`: nothing to blank here.
            from = start + 1;
            continue;
        }
        let bytes = out.as_bytes();
        let mut depth = 0usize;
        let mut end = bytes.len();
        for (k, &c) in bytes.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blank: String = out[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blank);
        from = end;
    }
    out
}

/// The module path of a file under `src/`: `src/a/b.rs` → [a, b],
/// `src/a/mod.rs` → [a], `src/a.rs` → [a].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a file's code names, with the line of each.
fn uses_in(code: &str, path: &[String], top: &BTreeSet<String>) -> Vec<(String, usize)> {
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut push = |name: &str, pos: usize| {
        if top.contains(name) {
            found.push((name.to_string(), line_of(pos)));
        }
    };
    // `crate::name` and `crate::{a, b::c, …}` (nested groups read by depth).
    let mut from = 0;
    while let Some(p) = code[from..].find("crate::") {
        let at = from + p;
        from = at + 7;
        if at > 0 && is_ident(bytes[at - 1] as char) {
            continue; // `$crate::` or `huntaze_crate::`
        }
        let rest = &code[at + 7..];
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            let mut depth = 1;
            let mut token = String::new();
            let mut offset = at + 7 + (rest.len() - rest_trim.len()) + 1;
            let mut expect_name = true;
            for c in group.chars() {
                offset += c.len_utf8();
                match c {
                    '{' => {
                        depth += 1;
                        token.clear();
                        expect_name = false;
                    }
                    '}' => {
                        if depth == 1 && expect_name && !token.is_empty() {
                            push(&token, offset);
                        }
                        depth -= 1;
                        token.clear();
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        if depth == 1 && expect_name && !token.is_empty() {
                            push(&token, offset);
                        }
                        token.clear();
                        if depth == 1 {
                            expect_name = true;
                        }
                    }
                    ':' => {
                        if depth == 1 && expect_name && !token.is_empty() {
                            push(&token, offset);
                            expect_name = false;
                        }
                        token.clear();
                    }
                    c if is_ident(c) => token.push(c),
                    _ => {
                        // `self`, `as`, whitespace: a name ends here.
                        if depth == 1 && expect_name && !token.is_empty() {
                            push(&token, offset);
                            expect_name = false;
                        }
                        token.clear();
                    }
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            push(&name, at);
        }
    }
    // `super::…` chains that climb to the crate root, then name a module.
    let mut from = 0;
    while let Some(p) = code[from..].find("super::") {
        let at = from + p;
        if at > 0 && is_ident(bytes[at - 1] as char) {
            from = at + 7;
            continue;
        }
        let mut depth = path.len();
        let mut k = at;
        while code[k..].starts_with("super::") {
            depth = depth.saturating_sub(1);
            k += 7;
        }
        from = k;
        if depth == 0 {
            let name: String = code[k..].chars().take_while(|&c| is_ident(c)).collect();
            push(&name, at);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every cross-module use in the tree under `src`, and the top-level modules.
fn read_tree(src: &Path) -> (BTreeSet<String>, Vec<Use>, BTreeMap<String, String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut top = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let path = module_path(rel);
        if let Some(first) = path.first()
            && first != "lib"
            && first != "main"
        {
            top.insert(first.clone());
        }
    }
    let mut uses = Vec::new();
    let mut code_of = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let path = module_path(rel);
        let Some(from) = path.first().filter(|m| top.contains(*m)).cloned() else {
            continue; // lib.rs, main.rs: the crate root re-exports; the binary is a shell.
        };
        let text = std::fs::read_to_string(f).expect("source file");
        let code = code_only(&text);
        for (to, line) in uses_in(&code, &path, &top) {
            if to != from {
                uses.push(Use {
                    from: from.clone(),
                    to,
                    file: format!("src/{}", rel.display()),
                    line,
                });
            }
        }
        code_of.insert(format!("src/{}", rel.display()), code);
    }
    uses.sort();
    uses.dedup_by(|a, b| a.from == b.from && a.to == b.to && a.file == b.file);
    (top, uses, code_of)
}

/// What is wrong with the shape, one line per finding.
fn violations(top: &BTreeSet<String>, uses: &[Use]) -> Vec<String> {
    let mut found = Vec::new();
    for m in top {
        if layer_of(m).is_none() {
            found.push(format!(
                "module `{m}` has no layer: add it to LAYERS in tests/architecture.rs"
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

/// Strongly connected components of more than one module (Tarjan).
fn cycles(uses: &[Use]) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for u in uses {
        graph.entry(&u.from).or_default().insert(&u.to);
        graph.entry(&u.to).or_default();
    }
    struct Tarjan<'a> {
        graph: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in &self.graph[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
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
