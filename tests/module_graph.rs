//! No two files of a crate import each other, directly or around a loop: the module graph of
//! `runtime/src`, `codegen/src` and the facade's `src` is acyclic.
//!
//! Each file is a node. An edge goes from a file to the file that *defines* what one of its
//! paths names: every `use` tree (public or not) and every `crate::` / `super::` / `self::`
//! path in the code, resolved through the module tree and through re-exports (`pub use`), so a
//! facade `mod.rs` that re-exports its children does not tie them together. Comments and
//! string literals are ignored; inline modules (`mod tests { .. }`) are followed. A cycle is
//! reported with the files around it and the path that made each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: the file that holds it and the inline modules inside that file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Module {
    /// Module path from the crate root (file modules, then inline ones).
    path: Vec<String>,
    /// How many trailing segments of `path` are inline modules of the file.
    inline: usize,
}

/// One `use` leaf: the path it imports and the name it binds.
#[derive(Debug, Clone)]
struct UseLeaf {
    path: Vec<String>,
    alias: Option<String>,
    glob: bool,
}

#[derive(Debug, Default)]
struct FileInfo {
    /// Per module (inline ones included) of this file: its `use` leaves.
    uses: Vec<(Module, UseLeaf)>,
    /// Paths in the code, with the module they appear in.
    paths: Vec<(Module, Vec<String>)>,
    /// Inline modules declared in the file.
    inline_modules: BTreeSet<Vec<String>>,
}

/// The file of each file module, by module path.
struct Crate {
    files: BTreeMap<Vec<String>, PathBuf>,
    info: BTreeMap<Vec<String>, FileInfo>,
}

/// Replaces comments, string and char literals by spaces (lifetimes are kept).
fn strip(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && !c
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push(' ');
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c[i] == '\'' {
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(' ');
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push(' ');
            } else {
                out.push(c[i]);
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn tokens(source: &str) -> Vec<String> {
    let c: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphanumeric() || c[i] == '_' || c[i] == '$' {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".to_string());
            i += 2;
        } else if c[i].is_whitespace() {
            i += 1;
        } else {
            out.push(c[i].to_string());
            i += 1;
        }
    }
    out
}

/// Parses a use tree starting at `t[*i]` (after `use`), up to `;`.
fn use_tree(t: &[String], i: &mut usize, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    let mut path = prefix;
    while *i < t.len() {
        let tok = t[*i].as_str();
        match tok {
            "::" => *i += 1,
            "{" => {
                *i += 1;
                loop {
                    use_tree(t, i, path.clone(), out);
                    match t.get(*i).map(String::as_str) {
                        Some(",") => {
                            *i += 1;
                            if t.get(*i).map(String::as_str) == Some("}") {
                                *i += 1;
                                return;
                            }
                        }
                        Some("}") => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            "*" => {
                *i += 1;
                out.push(UseLeaf {
                    path,
                    alias: None,
                    glob: true,
                });
                return;
            }
            "," | "}" | ";" => {
                if !path.is_empty() {
                    let alias = if path.last().map(String::as_str) == Some("self") {
                        path.pop();
                        path.last().cloned()
                    } else {
                        path.last().cloned()
                    };
                    out.push(UseLeaf {
                        path,
                        alias,
                        glob: false,
                    });
                }
                return;
            }
            "as" => {
                let alias = t.get(*i + 1).cloned();
                *i += 2;
                if path.last().map(String::as_str) == Some("self") {
                    path.pop();
                }
                out.push(UseLeaf {
                    path,
                    alias,
                    glob: false,
                });
                return;
            }
            _ => {
                path.push(tok.to_string());
                *i += 1;
            }
        }
    }
}

fn analyse(source: &str, file_module: &[String]) -> FileInfo {
    let t = tokens(&strip(source));
    let mut info = FileInfo::default();
    // Inline modules open at a brace depth.
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let module = |stack: &[(String, usize)]| {
        let mut path = file_module.to_vec();
        path.extend(stack.iter().map(|(n, _)| n.clone()));
        Module {
            path,
            inline: stack.len(),
        }
    };
    let mut i = 0;
    while i < t.len() {
        match t[i].as_str() {
            "{" => {
                depth += 1;
                i += 1;
            }
            "}" => {
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            "mod" if t.get(i + 2).map(String::as_str) == Some("{") => {
                let name = t[i + 1].clone();
                depth += 1;
                stack.push((name, depth));
                info.inline_modules.insert(module(&stack).path);
                i += 3;
            }
            "use" => {
                let here = module(&stack);
                let mut leaves = Vec::new();
                i += 1;
                use_tree(&t, &mut i, Vec::new(), &mut leaves);
                while i < t.len() && t[i] != ";" {
                    i += 1;
                }
                info.uses
                    .extend(leaves.into_iter().map(|l| (here.clone(), l)));
            }
            "crate" | "$crate" | "super" | "self"
                if t.get(i + 1).map(String::as_str) == Some("::") =>
            {
                let mut path = vec![t[i].trim_start_matches('$').to_string()];
                let mut j = i + 1;
                while t.get(j).map(String::as_str) == Some("::")
                    && t.get(j + 1)
                        .is_some_and(|s| s.chars().all(|c| c.is_alphanumeric() || c == '_'))
                {
                    path.push(t[j + 1].clone());
                    j += 2;
                }
                info.paths.push((module(&stack), path));
                i = j;
            }
            _ => i += 1,
        }
    }
    info
}

fn load(root: &Path) -> Crate {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap();
                let mut module: Vec<String> = rel
                    .iter()
                    .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
                    .collect();
                if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                    module.pop();
                }
                if rel.starts_with("bin") {
                    continue;
                }
                files.insert(module, path);
            }
        }
    }
    let info = files
        .iter()
        .map(|(m, p)| (m.clone(), analyse(&std::fs::read_to_string(p).unwrap(), m)))
        .collect();
    Crate { files, info }
}

impl Crate {
    /// The file module holding `module`.
    fn file_of(&self, module: &Module) -> Vec<String> {
        module.path[..module.path.len() - module.inline].to_vec()
    }

    fn child(&self, module: &Module, name: &str) -> Option<Module> {
        let mut path = module.path.clone();
        path.push(name.to_string());
        let file = self.file_of(module);
        if self.info[&file].inline_modules.contains(&path) {
            return Some(Module {
                path,
                inline: module.inline + 1,
            });
        }
        (module.inline == 0 && self.files.contains_key(&path)).then_some(Module { path, inline: 0 })
    }

    fn parent(&self, module: &Module) -> Module {
        let mut path = module.path.clone();
        path.pop();
        Module {
            path,
            inline: module.inline.saturating_sub(1),
        }
    }

    /// Where `path`, as written in `from`, leads: a module, or the module whose file
    /// defines the item it names. `None` for paths outside the crate.
    fn resolve(&self, from: &Module, path: &[String], depth: usize) -> Option<Module> {
        if depth > 32 || path.is_empty() {
            return None;
        }
        let (mut at, rest) = match path[0].as_str() {
            "crate" => (
                Module {
                    path: vec![],
                    inline: 0,
                },
                &path[1..],
            ),
            "self" => (from.clone(), &path[1..]),
            "super" => {
                let mut at = self.parent(from);
                let mut rest = &path[1..];
                while rest.first().map(String::as_str) == Some("super") {
                    at = self.parent(&at);
                    rest = &rest[1..];
                }
                (at, rest)
            }
            first => {
                // A child module of `from`, or a name `from` imported; otherwise another crate.
                if let Some(child) = self.child(from, first) {
                    (child, &path[1..])
                } else {
                    let imported = self.import_of(from, first)?;
                    return self.resolve(
                        &imported.0,
                        &[imported.1, path[1..].to_vec()].concat(),
                        depth + 1,
                    );
                }
            }
        };
        for (k, seg) in rest.iter().enumerate() {
            if let Some(child) = self.child(&at, seg) {
                at = child;
                continue;
            }
            // An item of `at`: defined there, or re-exported from elsewhere.
            if let Some((origin, target)) = self.import_of(&at, seg) {
                let full = [target, rest[k + 1..].to_vec()].concat();
                return self.resolve(&origin, &full, depth + 1).or(Some(at));
            }
            return Some(at);
        }
        Some(at)
    }

    /// The path a `use` in `module` binds to `name`, and the module it is written in.
    fn import_of(&self, module: &Module, name: &str) -> Option<(Module, Vec<String>)> {
        let file = self.file_of(module);
        let uses = &self.info[&file].uses;
        uses.iter()
            .filter(|(m, _)| m == module)
            .find(|(_, l)| !l.glob && l.alias.as_deref() == Some(name))
            .map(|(m, l)| (m.clone(), l.path.clone()))
    }

    /// Edges between files, each with the path that made it.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> {
        let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
        for (file, info) in &self.info {
            let uses = info.uses.iter().map(|(m, l)| (m, &l.path));
            let paths = info.paths.iter().map(|(m, p)| (m, p));
            for (module, path) in uses.chain(paths) {
                let Some(target) = self.resolve(module, path, 0) else {
                    continue;
                };
                let target = self.file_of(&target);
                if &target != file {
                    edges
                        .entry(file.clone())
                        .or_default()
                        .entry(target)
                        .or_insert_with(|| path.join("::"));
                }
            }
        }
        edges
    }
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib.rs".to_string()
    } else {
        module.join("/")
    }
}

/// A cycle of the graph, if there is one: each file with the path to the next.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        trail: &mut Vec<(Vec<String>, String)>,
    ) -> Option<Vec<String>> {
        marks.insert(node.clone(), Mark::Open);
        for (next, via) in edges.get(node).into_iter().flatten() {
            trail.push((node.clone(), via.clone()));
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = trail.iter().position(|(n, _)| n == next).unwrap_or(0);
                    return Some(
                        trail[start..]
                            .iter()
                            .map(|(n, via)| format!("{} --({via})-->", name(n)))
                            .chain([name(next)])
                            .collect(),
                    );
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, marks, trail) {
                        return Some(cycle);
                    }
                }
            }
            trail.pop();
        }
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn assert_acyclic(root: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
    let krate = load(&dir);
    let edges = krate.edges();
    if std::env::var_os("SATA_SHOW_MODULES").is_some() {
        for (from, to) in &edges {
            let to: Vec<String> = to.keys().map(|t| name(t)).collect();
            eprintln!("{} -> {}", name(from), to.join(", "));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "{root}: import cycle between files:\n  {}",
            cycle.join("\n  ")
        );
    }
}

#[test]
fn the_runtime_has_no_import_cycles() {
    assert_acyclic("runtime/src");
}

#[test]
fn the_generator_has_no_import_cycles() {
    assert_acyclic("codegen/src");
}

#[test]
fn the_facade_and_cli_have_no_import_cycles() {
    assert_acyclic("src");
}

/// The checker itself finds a cycle where there is one, through a re-export and an inline
/// path, and none where a facade only re-exports.
#[test]
fn the_checker_sees_cycles_and_sees_through_facades() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "mod a;\nmod b;\npub use a::Thing;\n");
    write("a/mod.rs", "mod inner;\npub use inner::Thing;\n");
    write("a/inner.rs", "use crate::b::Other;\npub struct Thing;\n");
    write(
        "b.rs",
        "pub struct Other;\nfn f() { let _ = crate::Thing; }\n",
    );
    let krate = load(dir.path());
    let cycle = find_cycle(&krate.edges()).expect("a/inner.rs <-> b.rs is a cycle");
    assert!(cycle.iter().any(|s| s.contains("a/inner")), "{cycle:?}");
    // Without b's use of the re-exported Thing, the facades alone make no cycle.
    write(
        "b.rs",
        "pub struct Other;\n#[cfg(test)]\nmod tests { use super::*; }\n",
    );
    let krate = load(dir.path());
    assert_eq!(find_cycle(&krate.edges()), None);
}
