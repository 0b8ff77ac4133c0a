//! The module graph of `crates/tzkms/src`: read from the source (every `crate::…`, `super::…`, `self::…`
//! and child-module path outside `#[cfg(test)]` modules), it has no cycles, and the signing pipeline does
//! not import the edges around it. Run alone with `cargo test -p tzkms --test api architecture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's modules, each named by its path (`""` is the crate root, `"backend::file"` a file).
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules of the signing pipeline, and the edge modules none of them may import.
const PIPELINE: &[&str] = &["signer", "policy", "watermark", "backend", "threshold"];
const EDGES: &[&str] = &["server", "ops", "cli", "startup", "app"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir` with its module path; `main.rs` and `cli/` are the binary, not the library.
fn library_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap().with_extension("");
            let mut segments: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if segments.last().is_some_and(|s| s == "mod") {
                segments.pop();
            }
            if segments == ["lib"] {
                segments.clear();
            }
            if segments.first().is_some_and(|s| s == "main" || s == "cli") {
                continue;
            }
            out.insert(segments.join("::"), path);
        }
    }
    out
}

/// The source without comments, string and character literals, and `#[cfg(test)]` modules.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") || rest.starts_with("br\"") {
            let hashes = rest.trim_start_matches('b')[1..]
                .chars()
                .take_while(|c| *c == '#')
                .count();
            let close = format!("\"{}", "#".repeat(hashes));
            let open = rest.find('"').unwrap() + 1;
            i += open
                + rest[open..]
                    .find(&close)
                    .map_or(rest.len() - open, |e| e + close.len());
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime.
            let close = rest[1..].find('\'').map(|e| e + 1);
            match close {
                Some(e) if e <= 10 && !rest[1..e].contains([' ', ',', '>']) => {
                    i += e + 1;
                    out.push_str("' '");
                }
                _ => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    // Drop `#[cfg(test)] mod name { … }`.
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = &out[at..];
        let Some(open) = after.find('{') else { break };
        if !after[..open].contains("mod ") {
            out.replace_range(at..at + "#[cfg(test)]".len(), "");
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (k, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..at + end, "");
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::PathSep);
            i += 2;
            continue;
        }
        match c {
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            c if c.is_whitespace() => {}
            _ => out.push(Token::Other),
        }
        i += 1;
    }
    out
}

/// Reads the path (or use tree) starting at `tokens[i]` (an identifier followed by `::`), calling `found`
/// with every full path's segments. Returns the index after it.
fn read_path(tokens: &[Token], mut i: usize, prefix: &[String], found: &mut dyn FnMut(Vec<String>)) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(i) {
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                i += 1;
                if tokens.get(i) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                found(path);
                return i;
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        Some(Token::Ident(_)) | Some(Token::Open) => i = read_path(tokens, i, &path, found),
                        None => return i,
                        _ => i += 1,
                    }
                }
            }
            _ => {
                found(path);
                return i;
            }
        }
    }
}

/// The module each path of `module`'s source names: the longest prefix that is a module of `modules`.
fn imports(module: &str, source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    let children: BTreeSet<String> = modules
        .iter()
        .filter_map(|m| {
            let rest = if module.is_empty() {
                m.as_str()
            } else {
                m.strip_prefix(module)?.strip_prefix("::")?
            };
            (!rest.is_empty() && !rest.contains("::")).then(|| rest.to_string())
        })
        .collect();
    let toks = tokens(&code_only(source));
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < toks.len() {
        let starts_path = matches!(&toks[i], Token::Ident(_))
            && toks.get(i + 1) == Some(&Token::PathSep)
            && (i == 0 || toks[i - 1] != Token::PathSep);
        if !starts_path {
            i += 1;
            continue;
        }
        let Token::Ident(first) = &toks[i] else {
            unreachable!()
        };
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            name if children.contains(name) => {
                let mut b = here.clone();
                b.push(name.to_string());
                b
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let mut j = i + 2;
        // `super::super::…`
        while toks.get(j) == Some(&Token::Ident("super".into())) && toks.get(j + 1) == Some(&Token::PathSep) {
            base.pop();
            j += 2;
        }
        let mut paths = Vec::new();
        i = read_path(&toks, j, &base, &mut |p| paths.push(p));
        for path in paths {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m))
                .unwrap_or_default();
            if target != module {
                out.insert(target);
            }
        }
    }
    out
}

fn graph() -> Graph {
    let files = library_files(&src());
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, path)| {
            let source = std::fs::read_to_string(path).unwrap();
            (module.clone(), imports(module, &source, &modules))
        })
        .collect()
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// One cycle inside `component`, as `a -> b -> … -> a`, by a breadth-first search back to its first module.
fn one_cycle(graph: &Graph, component: &[String]) -> String {
    let inside: BTreeSet<&str> = component.iter().map(String::as_str).collect();
    let start = component[0].as_str();
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].iter().map(String::as_str).filter(|w| inside.contains(w)) {
            if w == start {
                let mut path = vec![start, v];
                let mut at = v;
                while at != start {
                    at = previous[at];
                    path.push(at);
                }
                path.reverse();
                return path
                    .iter()
                    .map(|m| if m.is_empty() { "crate" } else { m })
                    .collect::<Vec<_>>()
                    .join(" -> ");
            }
            if !previous.contains_key(w) {
                previous.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    component.join(", ")
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = graph();
    assert!(
        graph.len() > 20,
        "found only {} modules under {}",
        graph.len(),
        src().display()
    );
    let found: Vec<String> = cycles(&graph)
        .iter()
        .map(|c| format!("{} (one cycle: {})", c.join(", "), one_cycle(&graph, c)))
        .collect();
    if std::env::var_os("TZKMS_PRINT_GRAPH").is_some() {
        for (module, imports) in &graph {
            println!("{module} -> {imports:?}");
        }
    }
    assert!(
        found.is_empty(),
        "import cycles in crates/tzkms/src:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_signing_pipeline_does_not_import_the_server_or_the_wiring() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        if !PIPELINE.contains(&top(module)) {
            continue;
        }
        for target in imports.iter().filter(|t| EDGES.contains(&top(t))) {
            wrong.push(format!("{module} imports {target}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the pipeline imports its edges:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_graph_reader_sees_use_trees_super_and_child_paths() {
    let modules: BTreeSet<String> = ["", "a", "a::b", "c", "d", "e"].map(String::from).into();
    let source = "use crate::{c::X, d};\n// crate::e::Y in a comment\nfn f() { let _ = \"crate::e\"; \
                  super::BUILD; b::Z::new(); }\n#[cfg(test)]\nmod tests { use crate::e::T; }\n";
    let found = imports("a", source, &modules);
    assert_eq!(found, ["", "a::b", "c", "d"].map(String::from).into());
    let mut g = Graph::new();
    g.insert("a".into(), ["b".into()].into());
    g.insert("b".into(), ["c".into()].into());
    g.insert("c".into(), ["a".into()].into());
    g.insert("d".into(), ["a".into()].into());
    let c = cycles(&g);
    assert_eq!(c, vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    assert_eq!(one_cycle(&g, &c[0]), "a -> b -> c -> a");
}
