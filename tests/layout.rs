//! The code's map, checked: no two files of `src/` use each other (directly
//! or around a circle), and no file outside `src/kinds/` names a job kind,
//! so that adding a kind is one module and one registration.  Read from the
//! sources; no server.

mod common;

use common::project_root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate: its path (`["kinds", "backfill"]`) and its
/// source without comments.
fn modules() -> BTreeMap<Vec<String>, String> {
    let root = project_root().join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&root).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().map(String::as_str) == Some("mod") {
                    parts.pop();
                }
                if parts == ["lib"] {
                    parts.clear();
                }
                out.insert(
                    parts,
                    without_comments(&std::fs::read_to_string(&path).unwrap()),
                );
            }
        }
    }
    out
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A "//" inside a string literal ("http://") is rare here and
            // only hides text from this check, never adds an edge.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest module path that exists, of `path`.
fn resolve(mods: &BTreeMap<Vec<String>, String>, path: &[String]) -> Vec<String> {
    let mut p = path.to_vec();
    while !p.is_empty() && !mods.contains_key(&p) {
        p.pop();
    }
    p
}

/// Paths a module names: `crate::a::b`, `super::a`, `self::a`, a child
/// module by its name (`child::f`), and each item of `use x::{a, b::c}`.
fn uses(me: &[String], is_dir: bool, text: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let base: Vec<String> = if is_dir {
        me.to_vec()
    } else {
        me[..me.len().saturating_sub(1)].to_vec()
    };
    // `use` declarations, their braces expanded to one path per item.
    let mut expanded = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("use ") {
        let at_start = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let end = rest[i..].find(';').map_or(rest.len(), |e| i + e);
        if at_start {
            for p in expand(&rest[i + 4..end].replace(char::is_whitespace, "")) {
                expanded.push_str(&p);
                expanded.push('\n');
            }
        }
        rest = &rest[end.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
    let all = format!("{text}\n{expanded}");
    let words: Vec<&str> = all
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.contains("::"))
        .collect();
    let children: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")
                .and_then(|r| r.strip_suffix(';'))
                .map(String::from)
        })
        .collect();
    for w in words {
        let segs: Vec<String> = w
            .split("::")
            .map(|s| s.trim_matches(|c| c == '{' || c == '}' || c == ','))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let Some(first) = segs.first() else { continue };
        let mut path: Vec<String> = match first.as_str() {
            "crate" => segs[1..].to_vec(),
            "super" => {
                let mut p = me[..me.len().saturating_sub(1)].to_vec();
                let mut rest = &segs[1..];
                while rest.first().map(String::as_str) == Some("super") {
                    p.pop();
                    rest = &rest[1..];
                }
                p.extend_from_slice(rest);
                p
            }
            "self" => base
                .iter()
                .cloned()
                .chain(segs[1..].iter().cloned())
                .collect(),
            c if is_dir && children.contains(c) => {
                base.iter().cloned().chain(segs.iter().cloned()).collect()
            }
            _ => continue,
        };
        path.retain(|s| s != "self");
        out.push(path);
    }
    out
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = vec![];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(|i| expand(&format!("{prefix}{i}")))
        .collect()
}

#[test]
fn no_two_files_of_src_use_each_other_around_a_circle() {
    let mods = modules();
    let root = project_root().join("src");
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (me, text) in &mods {
        let is_dir = me.is_empty() || root.join(me.join("/")).join("mod.rs").exists();
        let set = edges.entry(me.clone()).or_default();
        for path in uses(me, is_dir, text) {
            let target = resolve(&mods, &path);
            if !target.is_empty() && &target != me {
                set.insert(target);
            }
        }
    }
    // A circle is a path from a module back to itself.
    let mut circles = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut c: Vec<String> = trail.iter().map(|m| m.join("/")).collect();
                    let min = c.iter().min().unwrap().clone();
                    let i = c.iter().position(|m| *m == min).unwrap();
                    c.rotate_left(i);
                    circles.insert(c.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(
        edges.len() > 30 && edges.values().map(BTreeSet::len).sum::<usize>() > 80,
        "read too little: {} modules",
        edges.len()
    );
    assert!(
        circles.is_empty(),
        "files that use each other:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// Every kind's name, as `kinds/` registers it (read from its facts).
fn kind_names() -> Vec<String> {
    let mut names = vec![];
    let mut dirs = vec![project_root().join("src/kinds")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("name: \"") {
                    names.push(rest.trim_end_matches("\",").to_string());
                }
            }
        }
    }
    names
}

fn files(dir: &Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

#[test]
fn no_file_outside_kinds_names_a_kind() {
    let names = kind_names();
    assert!(
        ["backfill", "create_index", "drop_index", "reindex"]
            .iter()
            .all(|n| names.iter().any(|m| m == n)),
        "kinds found: {names:?}"
    );
    let root = project_root();
    let mut paths = vec![];
    files(&root.join("src"), "rs", &mut paths);
    files(&root.join("sql"), "sql", &mut paths);
    let mut found = vec![];
    for path in paths {
        if path.starts_with(root.join("src/kinds")) {
            continue;
        }
        let text = without_comments(&std::fs::read_to_string(&path).unwrap());
        for name in &names {
            for literal in [format!("\"{name}\""), format!("'{name}'")] {
                if text.contains(&literal) {
                    found.push(format!(
                        "{}: {literal}",
                        path.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "kind names outside src/kinds:\n{}",
        found.join("\n")
    );
}
