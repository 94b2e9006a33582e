//! The crate's modules form layers: no module imports (`crate::…` / `super::…`) one that imports
//! it back, directly or through others. A cycle is reported with its members.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path of a source file under src/ ("" for lib.rs, "head" for head/mod.rs, …).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                walk(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The path segments after each `crate::` / `super::` in code (comments dropped).
fn references(src: &str) -> Vec<(bool, Vec<String>)> {
    let code: String = src
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for kw in ["crate::", "super::"] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(kw) {
            let before = rest[..i].chars().last();
            rest = &rest[i + kw.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut segs = Vec::new();
            let mut s = rest;
            loop {
                let n: String = s
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if n.is_empty() {
                    break;
                }
                s = &s[n.len()..];
                segs.push(n);
                match s.strip_prefix("::") {
                    Some(t) => s = t,
                    None => break,
                }
            }
            out.push((kw == "super::", segs));
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mods: BTreeMap<Vec<String>, std::path::PathBuf> = files
        .iter()
        .map(|f| (module_of(f.strip_prefix(&src).unwrap()), f.clone()))
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, f) in &mods {
        let text = std::fs::read_to_string(f).unwrap();
        let deps = edges.entry(m.clone()).or_default();
        for (sup, segs) in references(&text) {
            let mut target = if sup {
                // `super` of `a::b` (a/b.rs or a/b/mod.rs) is `a`.
                let mut t = m[..m.len().saturating_sub(1)].to_vec();
                t.extend(segs);
                t
            } else {
                segs
            };
            while !target.is_empty() && !mods.contains_key(&target) {
                target.pop();
            }
            if !target.is_empty() && &target != m && !m.starts_with(&target) {
                deps.insert(target);
            }
        }
    }
    // A cycle: some module reachable from one of its own dependencies.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = edges.get(from).into_iter().flatten().cloned().collect();
        while let Some(n) = stack.pop() {
            if seen.insert(n.clone()) {
                stack.extend(edges.get(&n).into_iter().flatten().cloned());
            }
        }
        seen
    };
    let cyclic: Vec<String> = mods
        .keys()
        .filter(|m| reach(m).contains(*m))
        .map(|m| m.join("::"))
        .collect();
    assert!(cyclic.is_empty(), "modules in import cycles: {cyclic:?}");
    assert!(mods.len() > 20, "found only {} modules", mods.len());
}
