//! The model's files form layers: no file of `model/src` names (through a
//! `crate::<module>` path) a module that names it back, directly or through others.
//! A circle would mean that state, queries, transitions, properties and the checker
//! could no longer be read one after another.

use std::collections::BTreeMap;
use std::path::Path;

/// Each module of `model/src` and the modules of this crate it names.
fn module_graph() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("model/src is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("file names are UTF-8")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("source is readable");
            texts.insert(name, text);
        }
    }
    texts
        .iter()
        .map(|(name, text)| {
            let mut deps: Vec<String> = crate_paths(text)
                .into_iter()
                .filter(|d| d != name && texts.contains_key(d))
                .collect();
            deps.sort();
            deps.dedup();
            (name.clone(), deps)
        })
        .collect()
}

/// The first segments after `crate::` in code (comments and docs left out), with the
/// groups of `use crate::{a, b::c}` opened.
fn crate_paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            out.extend(group.split(',').map(|part| ident(part.trim())));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// A circle of modules, if there is one.
fn find_circle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, Vec<String>>,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.iter().any(|n| n == node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.push(node.to_string());
        None
    }
    let mut done = Vec::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn crate_paths_are_read_from_use_groups_and_code_not_comments() {
    let text = "use crate::machine::CacheModel;\nuse crate::{state, protocol::Mode};\n// crate::check\nfn f() { crate::story::tell(); }";
    assert_eq!(
        crate_paths(text),
        ["machine", "state", "protocol", "story"].map(String::from)
    );
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, Vec<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_circle(&graph),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}

#[test]
fn no_model_file_imports_one_that_imports_it() {
    let graph = module_graph();
    assert!(
        graph.contains_key("machine") && graph.contains_key("protocol"),
        "{graph:?}"
    );
    if let Some(circle) = find_circle(&graph) {
        panic!("import circle in model/src: {}", circle.join(" -> "));
    }
}
