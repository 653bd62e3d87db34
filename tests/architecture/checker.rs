//! The reading half of the architecture test: it turns the source tree
//! into the list of cross-module uses (comments, strings and test modules
//! blanked first) and finds the cycles among them. The rules those uses
//! are judged by live in `main.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Use {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) file: String,
    pub(crate) line: usize,
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

pub(crate) fn is_ident(c: char) -> bool {
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
pub(crate) fn read_tree(src: &Path) -> (BTreeSet<String>, Vec<Use>, BTreeMap<String, String>) {
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

/// Strongly connected components of more than one module (Tarjan).
pub(crate) fn cycles(uses: &[Use]) -> Vec<BTreeSet<String>> {
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
