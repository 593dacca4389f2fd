//! A crate target's module tree, read from its sources, and the dependencies between its
//! modules: the paths each module's own items write, resolved through re-exports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::lex::*;

/// A path written in a module's own items.
#[derive(Debug, Clone)]
pub(super) struct Reference {
    /// Its segments as written (`crate`, `super`, `self` included; `::` first for a path from
    /// the extern prelude).
    path: Vec<String>,
    line: usize,
}

/// A leaf of a `use` item: the path it imports, and the name it binds (none for a glob or `_`).
#[derive(Debug, Clone)]
pub(super) struct UseLeaf {
    reference: Reference,
    binds: Option<String>,
    /// `path::*`: every name of the module `reference` names.
    glob: bool,
}

/// One module of a crate target.
#[derive(Debug)]
pub(super) struct Module {
    /// Its path from the crate root (`deploy::server`); empty for the root.
    pub(super) path: Vec<String>,
    pub(super) parent: Option<usize>,
    pub(super) children: BTreeMap<String, usize>,
    /// The file its own items are written in (for an inline module, the enclosing file).
    pub(super) file: PathBuf,
    /// The folder that holds the files of the modules it declares.
    pub(super) dir: PathBuf,
    /// The paths its items write outside `use` items.
    pub(super) references: Vec<Reference>,
    /// Its `use` leaves.
    pub(super) uses: Vec<UseLeaf>,
}

impl Module {
    /// A module with nothing declared or written in it yet.
    pub(super) fn new(
        path: Vec<String>,
        parent: Option<usize>,
        file: PathBuf,
        dir: PathBuf,
    ) -> Self {
        Module {
            path,
            parent,
            children: BTreeMap::new(),
            file,
            dir,
            references: Vec::new(),
            uses: Vec::new(),
        }
    }
}

/// Where a dependency of one module on another is written.
#[derive(Debug, Clone)]
pub(super) struct Evidence {
    line: usize,
    path: String,
}

/// The modules of one crate target and the dependencies between them.
#[derive(Debug)]
pub(super) struct ModuleGraph {
    pub(super) modules: Vec<Module>,
    /// `(from, to)` -> every place `from` names `to`, in the order written.
    pub(super) edges: BTreeMap<(usize, usize), Vec<Evidence>>,
}

impl ModuleGraph {
    /// Reads the module tree of the target whose root file is `root` and resolves every path.
    pub(super) fn read(root: &Path) -> Result<Self, String> {
        let dir = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut reader = Reader {
            modules: vec![Module::new(Vec::new(), None, root.to_path_buf(), dir)],
            missing: Vec::new(),
        };
        reader.read_file(0);
        if !reader.missing.is_empty() {
            return Err(reader.missing.join("\n"));
        }
        let mut graph = ModuleGraph {
            modules: reader.modules,
            edges: BTreeMap::new(),
        };
        graph.resolve_all();
        Ok(graph)
    }

    /// The module's name: its path, or `crate` for the root.
    pub(super) fn name(&self, module: usize) -> String {
        let path = &self.modules[module].path;
        if path.is_empty() {
            "crate".to_string()
        } else {
            path.join("::")
        }
    }

    pub(super) fn is_ancestor(&self, ancestor: usize, mut module: usize) -> bool {
        while let Some(parent) = self.modules[module].parent {
            if parent == ancestor {
                return true;
            }
            module = parent;
        }
        false
    }

    /// The deepest module `path`, written in `from`, names, and whether the whole path is that
    /// module. `imports` allows a first segment bound by one of `from`'s `use` items (not while
    /// resolving those items themselves). An item a module re-exports (`pub use server::Remote`
    /// in `deploy`) resolves to the module that defines it (`deploy::server`): that is the
    /// module the path depends on.
    pub(super) fn resolve(
        &self,
        from: usize,
        path: &[String],
        imports: bool,
    ) -> Option<(usize, bool)> {
        self.resolve_within(from, path, imports, REEXPORT_HOPS)
    }

    pub(super) fn resolve_within(
        &self,
        from: usize,
        path: &[String],
        imports: bool,
        hops: usize,
    ) -> Option<(usize, bool)> {
        let first = path.first()?;
        let (mut module, mut rest) = match first.as_str() {
            "::" | "Self" => return None,
            "crate" => (0, &path[1..]),
            "self" | "super" => {
                let mut module = from;
                let mut rest = if first == "self" { &path[1..] } else { path };
                while rest.first().is_some_and(|s| s == "super") {
                    module = self.modules[module].parent?;
                    rest = &rest[1..];
                }
                (module, rest)
            }
            name => self.resolve_name(from, name, imports, path)?,
        };
        while let Some(&child) = rest
            .first()
            .and_then(|s| self.modules[module].children.get(s))
        {
            module = child;
            rest = &rest[1..];
        }
        let Some(item) = rest.first() else {
            return Some((module, true));
        };
        let reexport = self.modules[module]
            .uses
            .iter()
            .find(|u| u.binds.as_deref() == Some(item.as_str()));
        match reexport {
            Some(leaf) if hops > 0 => {
                match self.resolve_within(module, &leaf.reference.path, false, hops - 1) {
                    // A re-exported module: the rest of the path goes on from it.
                    Some((target, true)) => {
                        let mut onward = self.modules[target].path.clone();
                        onward.insert(0, "crate".to_string());
                        onward.extend(rest[1..].iter().cloned());
                        self.resolve_within(target, &onward, false, hops - 1)
                    }
                    Some((target, false)) => Some((target, false)),
                    // Re-exported from another crate: the item is this module's to give.
                    None => Some((module, false)),
                }
            }
            _ => Some((module, false)),
        }
    }

    /// Where a path that starts with a plain `name` in `from` starts: `from` itself when the
    /// name is its child; the module a `use` binds to it; a module whose children a glob import
    /// brings in. `None` for anything else: an extern crate or an item (in edition 2021 a
    /// sibling is not in scope until imported).
    pub(super) fn resolve_name<'p>(
        &self,
        from: usize,
        name: &str,
        imports: bool,
        path: &'p [String],
    ) -> Option<(usize, &'p [String])> {
        let module = &self.modules[from];
        if module.children.contains_key(name) {
            return Some((from, path));
        }
        if imports {
            if let Some(leaf) = module
                .uses
                .iter()
                .find(|u| u.binds.as_deref() == Some(name))
            {
                // A name bound to anything but a whole module (an item, an extern crate)
                // shadows the rest.
                return match self.resolve(from, &leaf.reference.path, false)? {
                    (target, true) => Some((target, &path[1..])),
                    (_, false) => None,
                };
            }
            for glob in module.uses.iter().filter(|u| u.glob) {
                if let Some((target, true)) = self.resolve(from, &glob.reference.path, false) {
                    if self.modules[target].children.contains_key(name) {
                        return Some((target, path));
                    }
                }
            }
        }
        None
    }

    /// Fills `edges` from every module's references and `use` leaves.
    pub(super) fn resolve_all(&mut self) {
        let mut edges: BTreeMap<(usize, usize), Vec<Evidence>> = BTreeMap::new();
        for from in 0..self.modules.len() {
            let module = &self.modules[from];
            let written = module
                .references
                .iter()
                .map(|r| (r, true))
                .chain(module.uses.iter().map(|u| (&u.reference, false)));
            for (reference, imports) in written {
                let Some((to, _)) = self.resolve(from, &reference.path, imports) else {
                    continue;
                };
                if to == from || self.is_ancestor(to, from) || self.is_ancestor(from, to) {
                    continue;
                }
                edges.entry((from, to)).or_default().push(Evidence {
                    line: reference.line,
                    path: reference.path.join("::"),
                });
            }
        }
        // The first place named is the first in the file.
        for evidence in edges.values_mut() {
            evidence.sort_by_key(|e| e.line);
        }
        self.edges = edges;
    }

    /// The strongly connected components of more than one module (Tarjan's algorithm).
    pub(super) fn tangles(&self) -> Vec<Vec<usize>> {
        struct Tarjan {
            next: Vec<Vec<usize>>,
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            counter: usize,
            found: Vec<Vec<usize>>,
        }
        impl Tarjan {
            fn visit(&mut self, v: usize) {
                self.index[v] = Some(self.counter);
                self.low[v] = self.counter;
                self.counter += 1;
                self.stack.push(v);
                self.on_stack[v] = true;
                for w in self.next[v].clone() {
                    match self.index[w] {
                        None => {
                            self.visit(w);
                            self.low[v] = self.low[v].min(self.low[w]);
                        }
                        Some(index) if self.on_stack[w] => {
                            self.low[v] = self.low[v].min(index);
                        }
                        Some(_) => {}
                    }
                }
                if Some(self.low[v]) == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        self.found.push(component);
                    }
                }
            }
        }
        let n = self.modules.len();
        let mut next = vec![Vec::new(); n];
        for &(from, to) in self.edges.keys() {
            next[from].push(to);
        }
        let mut tarjan = Tarjan {
            next,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            counter: 0,
            found: Vec::new(),
        };
        for v in 0..n {
            if tarjan.index[v].is_none() {
                tarjan.visit(v);
            }
        }
        let mut tangles = tarjan.found;
        for tangle in &mut tangles {
            tangle.sort_by_key(|&m| self.name(m));
        }
        tangles.sort_by_key(|t| self.name(t[0]));
        tangles
    }

    /// Every elementary cycle of every tangle, at most `limit` of them, each starting at its
    /// module first in name order.
    pub(super) fn cycles(&self, limit: usize) -> Vec<Vec<usize>> {
        let mut cycles = Vec::new();
        for tangle in self.tangles() {
            // A cycle is found once: from its first module in the tangle's (name) order,
            // through later modules only.
            for (rank, &start) in tangle.iter().enumerate() {
                let allowed: BTreeSet<usize> = tangle[rank..].iter().copied().collect();
                let mut path = vec![start];
                self.cycles_from(start, &allowed, &mut path, &mut cycles, limit);
            }
        }
        cycles
    }

    pub(super) fn cycles_from(
        &self,
        start: usize,
        allowed: &BTreeSet<usize>,
        path: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
        limit: usize,
    ) {
        let last = *path.last().expect("a path starts at a module");
        let mut next: Vec<usize> = self
            .edges
            .keys()
            .filter(|&&(from, to)| from == last && allowed.contains(&to))
            .map(|&(_, to)| to)
            .collect();
        next.sort_by_key(|&m| self.name(m));
        for to in next {
            if cycles.len() >= limit {
                return;
            }
            if to == start {
                cycles.push(path.clone());
            } else if !path.contains(&to) {
                path.push(to);
                self.cycles_from(start, allowed, path, cycles, limit);
                path.pop();
            }
        }
    }

    /// A cycle as a chain, then each edge with where it is written (files relative to `base`).
    pub(super) fn describe(&self, cycle: &[usize], base: &Path) -> String {
        let mut chain: Vec<String> = cycle.iter().map(|&m| self.name(m)).collect();
        chain.push(self.name(cycle[0]));
        let mut text = format!("  {}\n", chain.join(" -> "));
        for (k, &from) in cycle.iter().enumerate() {
            let to = cycle[(k + 1) % cycle.len()];
            let evidence = &self.edges[&(from, to)];
            let file = self.modules[from].file.strip_prefix(base).map_or_else(
                |_| self.modules[from].file.display().to_string(),
                |f| f.display().to_string(),
            );
            let more = match evidence.len() {
                1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            let _ = writeln!(
                text,
                "    {} -> {}: {file}:{} `{}`{more}",
                self.name(from),
                self.name(to),
                evidence[0].line,
                evidence[0].path,
            );
        }
        text
    }
}

/// Builds the module tree file by file.
pub(super) struct Reader {
    modules: Vec<Module>,
    /// Declared modules whose file does not exist, or files that cannot be read.
    missing: Vec<String>,
}

impl Reader {
    /// Reads the file of `module` (not inline) and everything it declares.
    pub(super) fn read_file(&mut self, module: usize) {
        let file = self.modules[module].file.clone();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let toks = lex(&text);
                self.scan(&toks, 0, toks.len(), module, true);
            }
            Err(e) => self.missing.push(format!("{}: {e}", file.display())),
        }
    }

    /// Adds a child module of `parent` and returns it.
    pub(super) fn declare(
        &mut self,
        parent: usize,
        name: &str,
        file: PathBuf,
        dir: PathBuf,
    ) -> usize {
        let mut path = self.modules[parent].path.clone();
        path.push(name.to_string());
        let module = self.modules.len();
        self.modules
            .push(Module::new(path, Some(parent), file, dir));
        self.modules[parent]
            .children
            .insert(name.to_string(), module);
        module
    }

    /// Declares `mod name;` of `parent`: finds its file as the compiler does.
    pub(super) fn declare_file(&mut self, parent: usize, name: &str, path_attribute: Option<&str>) {
        let dir = self.modules[parent].dir.clone();
        let (file, child_dir) = match path_attribute {
            Some(p) => {
                // `#[path]` is relative to the declaring file's folder, and the file it names
                // declares its own children next to itself.
                let base = self.modules[parent].file.parent().unwrap_or(Path::new("."));
                let file = base.join(p);
                let child_dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
                (file, child_dir)
            }
            None => {
                let flat = dir.join(format!("{name}.rs"));
                if flat.is_file() {
                    (flat, dir.join(name))
                } else {
                    (dir.join(name).join("mod.rs"), dir.join(name))
                }
            }
        };
        if !file.is_file() {
            self.missing.push(format!(
                "module `{name}` declared in {} has no file {}",
                self.modules[parent].file.display(),
                file.display()
            ));
            return;
        }
        let module = self.declare(parent, name, file, child_dir);
        self.read_file(module);
    }

    /// Scans `toks[start..end]`, written in `module`; `items` when the range is a module body
    /// (where `mod` declares a module), not a function or macro body.
    pub(super) fn scan(
        &mut self,
        toks: &[Token],
        start: usize,
        end: usize,
        module: usize,
        items: bool,
    ) {
        let mut attributes: Vec<String> = Vec::new();
        let mut i = start;
        while i < end {
            match tok(toks, i) {
                Tok::Punct('#') => {
                    let inner = tok(toks, i + 1) == &Tok::Punct('!');
                    let open = i + 1 + usize::from(inner);
                    if tok(toks, open) == &Tok::Open('[') {
                        let close = close_of(toks, open);
                        // An inner attribute (`#![...]`) is its enclosing module's, which is
                        // already read, not the next item's.
                        if !inner {
                            attributes.push(attribute_text(&toks[open + 1..close.min(end)]));
                        }
                        i = close + 1;
                        continue;
                    }
                    i += 1;
                }
                Tok::Ident(w) if w == "pub" => {
                    // Visibility keeps the attributes for the item that follows.
                    i += 1;
                    if tok(toks, i) == &Tok::Open('(') {
                        i = close_of(toks, i) + 1;
                    }
                    continue;
                }
                _ if attributes.iter().any(|a| is_cfg_test(a)) => {
                    // Test-only item: up to its `;` or through its first braces.
                    while i < end && tok(toks, i) != &Tok::Punct(';') {
                        if tok(toks, i) == &Tok::Open('{') {
                            i = close_of(toks, i);
                            break;
                        }
                        if let Tok::Open(_) = tok(toks, i) {
                            i = close_of(toks, i);
                        }
                        i += 1;
                    }
                    i += 1;
                }
                Tok::Ident(w) if w == "mod" && items => {
                    let Tok::Ident(name) = tok(toks, i + 1).clone() else {
                        i += 1;
                        continue;
                    };
                    let path_attribute = attributes.iter().find_map(|a| {
                        a.strip_prefix("path=\"")
                            .and_then(|p| p.strip_suffix('"'))
                            .map(str::to_string)
                    });
                    match tok(toks, i + 2) {
                        Tok::Punct(';') => {
                            self.declare_file(module, &name, path_attribute.as_deref());
                            i += 3;
                        }
                        Tok::Open('{') => {
                            let close = close_of(toks, i + 2);
                            let file = self.modules[module].file.clone();
                            let dir = self.modules[module].dir.join(&name);
                            let child = self.declare(module, &name, file, dir);
                            self.scan(toks, i + 3, close.min(end), child, true);
                            i = close + 1;
                        }
                        _ => i += 2,
                    }
                }
                Tok::Ident(w) if w == "use" && starts_use_tree(tok(toks, i + 1)) => {
                    i += 1;
                    let mut leaves = Vec::new();
                    use_tree(toks, &mut i, end, &[], &mut leaves);
                    self.modules[module].uses.extend(leaves);
                }
                Tok::Open(_) => {
                    let close = close_of(toks, i);
                    self.scan(toks, i + 1, close.min(end), module, false);
                    i = close + 1;
                }
                Tok::Ident(_) | Tok::Punct('$') if i == 0 || tok(toks, i - 1) != &Tok::PathSep => {
                    let (path, next) = read_path(toks, i);
                    if path.len() > 1 {
                        self.modules[module].references.push(Reference {
                            path,
                            line: toks[i].line,
                        });
                    }
                    i = next.max(i + 1);
                }
                _ => i += 1,
            }
            attributes.clear();
        }
    }
}

/// Whether the token after `use` starts a use tree (not `use<'a>`, precise capturing).
pub(super) fn starts_use_tree(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Ident(_) | Tok::PathSep | Tok::Open('{') | Tok::Punct('$')
    )
}

/// The path that starts at `i` (`$crate` read as `crate`), and the index after it.
pub(super) fn read_path(toks: &[Token], i: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    let mut k = i;
    match (tok(toks, i), tok(toks, i + 1)) {
        (Tok::Punct('$'), Tok::Ident(w)) if w == "crate" => {
            path.push("crate".to_string());
            k += 2;
        }
        // A macro's own variable (`$module::f`) names nothing the scan can know.
        (Tok::Punct('$'), Tok::Ident(_)) => return (path, i + 2),
        (Tok::Ident(w), _) => {
            path.push(w.clone());
            k += 1;
        }
        _ => return (path, i + 1),
    }
    while tok(toks, k) == &Tok::PathSep {
        let Tok::Ident(w) = tok(toks, k + 1) else {
            break;
        };
        path.push(w.clone());
        k += 2;
    }
    (path, k)
}

/// Reads one use tree at `*i` (not past `end`) under `prefix`, and the `;` that ends the item.
pub(super) fn use_tree(
    toks: &[Token],
    i: &mut usize,
    end: usize,
    prefix: &[String],
    out: &mut Vec<UseLeaf>,
) {
    match tok(toks, *i) {
        Tok::Open('{') => {
            *i += 1;
            while *i < end && tok(toks, *i) != &Tok::Close('}') {
                let before = *i;
                use_tree(toks, i, end, prefix, out);
                if tok(toks, *i) == &Tok::Punct(',') {
                    *i += 1;
                } else if *i == before {
                    // Not a use tree after all (a macro's own syntax): move on.
                    *i += 1;
                }
            }
            *i += 1;
        }
        Tok::Punct('*') => {
            out.push(UseLeaf {
                reference: Reference {
                    path: prefix.to_vec(),
                    line: toks[*i].line,
                },
                binds: None,
                glob: true,
            });
            *i += 1;
        }
        Tok::PathSep if prefix.is_empty() => {
            *i += 1;
            use_tree(toks, i, end, &["::".to_string()], out);
        }
        Tok::Ident(_) | Tok::Punct('$') => {
            let line = toks[*i].line;
            let (segments, next) = read_path(toks, *i);
            *i = next;
            let mut path = prefix.to_vec();
            path.extend(segments);
            if tok(toks, *i) == &Tok::PathSep {
                // `a::b::{...}` or `a::b::*`
                *i += 1;
                use_tree(toks, i, end, &path, out);
            } else {
                let mut binds = path.last().cloned();
                if path.last().is_some_and(|s| s == "self") {
                    path.pop();
                    binds = path.last().cloned();
                }
                if matches!(tok(toks, *i), Tok::Ident(w) if w == "as") {
                    binds = match tok(toks, *i + 1) {
                        Tok::Ident(alias) if alias != "_" => Some(alias.clone()),
                        _ => None,
                    };
                    *i += 2;
                }
                out.push(UseLeaf {
                    reference: Reference { path, line },
                    binds,
                    glob: false,
                });
            }
        }
        _ => *i += 1,
    }
    if prefix.is_empty() && tok(toks, *i) == &Tok::Punct(';') {
        *i += 1;
    }
}

/// The root files of a member's targets: its library, its binaries and its build script.
pub(super) fn targets(member: &Path) -> Vec<PathBuf> {
    let mut roots = BTreeSet::new();
    let manifest: toml::Value = std::fs::read_to_string(member.join("Cargo.toml"))
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_else(|| panic!("{} has no readable Cargo.toml", member.display()));
    for default in ["src/lib.rs", "src/main.rs", "build.rs"] {
        roots.insert(member.join(default));
    }
    if let Ok(entries) = std::fs::read_dir(member.join("src/bin")) {
        for entry in entries.flatten() {
            let path = entry.path();
            roots.insert(if path.is_dir() {
                path.join("main.rs")
            } else {
                path
            });
        }
    }
    // Targets the manifest places elsewhere.
    let explicit = manifest
        .get("lib")
        .into_iter()
        .chain(
            manifest
                .get("bin")
                .and_then(|b| b.as_array())
                .into_iter()
                .flatten(),
        )
        .filter_map(|t| t.get("path").and_then(|p| p.as_str()));
    for path in explicit {
        roots.insert(member.join(path));
    }
    roots
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

/// How many re-exports of re-exports a path is followed through: more than any crate uses, and
/// a bound on a chain that would otherwise go round.
pub(super) const REEXPORT_HOPS: usize = 8;
