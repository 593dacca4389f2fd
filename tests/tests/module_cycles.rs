//! No module of any crate in the workspace depends on itself through other modules
//! (docs/architecture.md: "no module depends back on a module that depends on it"). A cycle
//! between modules means neither can be read, tested or moved without the other, and it grows
//! quietly: the compiler accepts it.
//!
//! For every target of every workspace member (its library, binaries and build script) this test
//! reads the module tree from the sources as the compiler would find it (`mod x;` in `x.rs` or
//! `x/mod.rs`, `#[path]`, inline `mod x { }`) and records, for each module, the paths its own
//! items write (`crate::a::b`, `use crate::{a, b::c}`, `super::a`, `self::a`, `$crate::a` in a
//! macro, and a bare `a::` where `a` is a child, a module a `use` binds, or a child of a module a
//! glob import brings in, such as a sibling after `use super::*`; any other bare name is an
//! extern crate or an item). Each path is resolved to the deepest module it names, through
//! re-exports (`crate::deploy::Remote`, re-exported from `deploy::server`, names
//! `deploy::server`), and module A depends on module B when one of A's paths resolves to B. A
//! module's own ancestors and descendants do not count (a parent declaring or re-exporting its
//! child, a child using its parent's items, are containment), nor does test code: modules and
//! items under `#[cfg(test)]` may reach anywhere. Comments, doc links and strings are not
//! paths, and a macro is not followed to where it is defined.
//!
//! The strongly connected components of that graph (Tarjan) are the tangles; the test lists
//! each elementary cycle in them, with the file, line and path of every edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A token of Rust source, as far as module paths need: comments are dropped, and literals and
/// lifetimes carry nothing a path could be made of (except strings, for `#[path = "..."]`).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Open(char),
    Close(char),
    Punct(char),
    /// A string literal's text, escapes left as written.
    Str(String),
    /// A number, character, byte or lifetime.
    Other,
}

/// A token and the line it starts on.
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// What a read past the end of a token list sees.
static END: Tok = Tok::Other;

/// The token at `k`, or [`END`].
fn tok(toks: &[Token], k: usize) -> &Tok {
    toks.get(k).map_or(&END, |t| &t.tok)
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `text` into tokens.
fn lex(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let start_line = line;
        let ch = c[i];
        let tok = if ch == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if ch.is_whitespace() {
            i += 1;
            continue;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        } else if ch == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
            continue;
        } else if ch == '"' {
            let (end, text) = string(&c, i + 1, &mut line);
            i = end;
            Tok::Str(text)
        } else if ch == '\'' {
            if at(i + 1) == '\\' || at(i + 2) == '\'' {
                i = char_literal(&c, i);
            } else {
                // A lifetime or a loop label.
                i += 1;
                while is_ident_char(at(i)) {
                    i += 1;
                }
            }
            Tok::Other
        } else if ch.is_ascii_digit() {
            while is_ident_char(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
            Tok::Other
        } else if is_ident_start(ch) {
            let start = i;
            while is_ident_char(at(i)) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let hashes = (i..).take_while(|&k| at(k) == '#').count();
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", '"' | '#') if at(i + hashes) == '"' => {
                    let (end, text) = raw_string(&c, i + hashes + 1, hashes, &mut line);
                    i = end;
                    Tok::Str(text)
                }
                ("r", '#') if is_ident_start(at(i + 1)) => {
                    // A raw identifier: `r#type`.
                    let start = i + 1;
                    i += 1;
                    while is_ident_char(at(i)) {
                        i += 1;
                    }
                    Tok::Ident(c[start..i].iter().collect())
                }
                ("b" | "c", '"') => {
                    let (end, text) = string(&c, i + 1, &mut line);
                    i = end;
                    Tok::Str(text)
                }
                ("b", '\'') => {
                    i = char_literal(&c, i);
                    Tok::Other
                }
                _ => Tok::Ident(word),
            }
        } else if ch == ':' && at(i + 1) == ':' {
            i += 2;
            Tok::PathSep
        } else {
            i += 1;
            match ch {
                '(' | '[' | '{' => Tok::Open(ch),
                ')' | ']' | '}' => Tok::Close(ch),
                _ => Tok::Punct(ch),
            }
        };
        out.push(Token {
            tok,
            line: start_line,
        });
    }
    out
}

/// The end of a string whose text starts at `i`, and its text.
fn string(c: &[char], mut i: usize, line: &mut usize) -> (usize, String) {
    let start = i;
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        if c.get(i) == Some(&'\n') {
            *line += 1;
        }
        i += 1;
    }
    let text = c[start..i.min(c.len())].iter().collect();
    (i + 1, text)
}

/// The end of a raw string whose text starts at `i` and closes with `"` and `hashes` `#`s.
fn raw_string(c: &[char], mut i: usize, hashes: usize, line: &mut usize) -> (usize, String) {
    let start = i;
    while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#'))) {
        *line += usize::from(c[i] == '\n');
        i += 1;
    }
    let text = c[start..i.min(c.len())].iter().collect();
    (i + 1 + hashes, text)
}

/// The end of the character literal whose opening quote is at `i` (or a `b` before it).
fn char_literal(c: &[char], mut i: usize) -> usize {
    if c[i] == 'b' {
        i += 1;
    }
    // Past the quote and the first character, which may be an escaped quote.
    i += 1;
    if c.get(i) == Some(&'\\') {
        i += 1;
    }
    i += 1;
    while i < c.len() && c[i] != '\'' {
        i += 1;
    }
    i + 1
}

/// The index of the token that closes the group opened at `open`.
fn close_of(toks: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// An attribute's tokens written without spaces: `cfg(test)`, `path="x.rs"`.
fn attribute_text(toks: &[Token]) -> String {
    let mut s = String::new();
    for t in toks {
        match &t.tok {
            Tok::Ident(w) => {
                if s.ends_with(is_ident_char) {
                    s.push(' ');
                }
                s.push_str(w);
            }
            Tok::PathSep => s.push_str("::"),
            Tok::Open(ch) | Tok::Close(ch) | Tok::Punct(ch) => s.push(*ch),
            Tok::Str(text) => {
                let _ = write!(s, "\"{text}\"");
            }
            Tok::Other => s.push('?'),
        }
    }
    s
}

/// Whether an attribute keeps its item out of every build but the tests'.
fn is_cfg_test(attribute: &str) -> bool {
    attribute == "cfg(test)" || attribute.starts_with("cfg(all(test,")
}

/// A path written in a module's own items.
#[derive(Debug, Clone)]
struct Reference {
    /// Its segments as written (`crate`, `super`, `self` included; `::` first for a path from
    /// the extern prelude).
    path: Vec<String>,
    line: usize,
}

/// A leaf of a `use` item: the path it imports, and the name it binds (none for a glob or `_`).
#[derive(Debug, Clone)]
struct UseLeaf {
    reference: Reference,
    binds: Option<String>,
    /// `path::*`: every name of the module `reference` names.
    glob: bool,
}

/// One module of a crate target.
#[derive(Debug)]
struct Module {
    /// Its path from the crate root (`deploy::server`); empty for the root.
    path: Vec<String>,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// The file its own items are written in (for an inline module, the enclosing file).
    file: PathBuf,
    /// The folder that holds the files of the modules it declares.
    dir: PathBuf,
    /// The paths its items write outside `use` items.
    references: Vec<Reference>,
    /// Its `use` leaves.
    uses: Vec<UseLeaf>,
}

impl Module {
    /// A module with nothing declared or written in it yet.
    fn new(path: Vec<String>, parent: Option<usize>, file: PathBuf, dir: PathBuf) -> Self {
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
struct Evidence {
    line: usize,
    path: String,
}

/// The modules of one crate target and the dependencies between them.
#[derive(Debug)]
struct ModuleGraph {
    modules: Vec<Module>,
    /// `(from, to)` -> every place `from` names `to`, in the order written.
    edges: BTreeMap<(usize, usize), Vec<Evidence>>,
}

impl ModuleGraph {
    /// Reads the module tree of the target whose root file is `root` and resolves every path.
    fn read(root: &Path) -> Result<Self, String> {
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
    fn name(&self, module: usize) -> String {
        let path = &self.modules[module].path;
        if path.is_empty() {
            "crate".to_string()
        } else {
            path.join("::")
        }
    }

    fn is_ancestor(&self, ancestor: usize, mut module: usize) -> bool {
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
    fn resolve(&self, from: usize, path: &[String], imports: bool) -> Option<(usize, bool)> {
        self.resolve_within(from, path, imports, REEXPORT_HOPS)
    }

    fn resolve_within(
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
    fn resolve_name<'p>(
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
    fn resolve_all(&mut self) {
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
    fn tangles(&self) -> Vec<Vec<usize>> {
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
    fn cycles(&self, limit: usize) -> Vec<Vec<usize>> {
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

    fn cycles_from(
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
    fn describe(&self, cycle: &[usize], base: &Path) -> String {
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
struct Reader {
    modules: Vec<Module>,
    /// Declared modules whose file does not exist, or files that cannot be read.
    missing: Vec<String>,
}

impl Reader {
    /// Reads the file of `module` (not inline) and everything it declares.
    fn read_file(&mut self, module: usize) {
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
    fn declare(&mut self, parent: usize, name: &str, file: PathBuf, dir: PathBuf) -> usize {
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
    fn declare_file(&mut self, parent: usize, name: &str, path_attribute: Option<&str>) {
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
    fn scan(&mut self, toks: &[Token], start: usize, end: usize, module: usize, items: bool) {
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
fn starts_use_tree(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Ident(_) | Tok::PathSep | Tok::Open('{') | Tok::Punct('$')
    )
}

/// The path that starts at `i` (`$crate` read as `crate`), and the index after it.
fn read_path(toks: &[Token], i: usize) -> (Vec<String>, usize) {
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
fn use_tree(toks: &[Token], i: &mut usize, end: usize, prefix: &[String], out: &mut Vec<UseLeaf>) {
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
fn targets(member: &Path) -> Vec<PathBuf> {
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
const REEXPORT_HOPS: usize = 8;

/// The most cycles listed per target: a tangle of many modules has more cycles than a reader
/// can use, and the first ones already show where to cut.
const CYCLES_LISTED: usize = 200;

#[test]
fn no_crate_has_a_module_cycle() {
    let root = cotune_tests::workspace_root();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let members: Vec<&str> = manifest["workspace"]["members"]
        .as_array()
        .expect("the workspace lists its members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let (mut modules, mut edges, mut report) = (0, 0, Vec::new());
    for member in &members {
        let dir = root.join(member);
        for target in targets(&dir) {
            let graph = ModuleGraph::read(&target).unwrap_or_else(|e| panic!("{e}"));
            modules += graph.modules.len();
            edges += graph.edges.len();
            let cycles = graph.cycles(CYCLES_LISTED);
            if cycles.is_empty() {
                continue;
            }
            let tangles = graph.tangles();
            let mut text = format!(
                "{}: {} cycle(s) among {} modules in {} tangle(s)\n",
                target.strip_prefix(&root).unwrap_or(&target).display(),
                cycles.len(),
                tangles.iter().map(Vec::len).sum::<usize>(),
                tangles.len(),
            );
            for cycle in &cycles {
                text.push_str(&graph.describe(cycle, &dir));
            }
            report.push(text);
        }
    }
    // The scan sees the workspace: a reader that found no modules or no dependencies would
    // pass for the wrong reason.
    assert!(members.len() > 10, "found only {} members", members.len());
    assert!(modules > 100, "found only {modules} modules");
    assert!(
        edges > 100,
        "found only {edges} dependencies between modules"
    );
    assert!(
        report.is_empty(),
        "modules that depend on themselves through others (move what both sides need into a \
         module of its own, or pass it in):\n{}",
        report.join("\n")
    );
}

/// Writes `files` (`(path, text)`) under a new temporary folder.
fn source_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn the_scan_finds_cycles_and_not_containment() {
    let tree = source_tree(&[
        (
            "src/lib.rs",
            "//! root\npub mod a;\nmod b;\npub(crate) mod c;\nmod d;\nmod e;\nmod f;\nmod g;\nmod p;\nmod r;\n\
             // The root re-exports its child: containment.\npub use a::Alpha;\n",
        ),
        // a -> b through a `use crate::{...}` group; b -> a through `super::`: a 2-cycle.
        (
            "src/a.rs",
            "use crate::{b::Beta, p};\npub struct Alpha(Beta);\n\
             // crate::f::Fake in a comment, /* crate::f::Fake */ a block comment\n\
             const S: &str = \"crate::f::Fake\";\nconst R: &str = r#\"crate::f::\"Fake\"#;\n\
             const C: char = '\"';\nfn lt<'a>(x: &'a str) -> &'a str { x }\n\
             #[cfg(test)]\nmod tests {\n    use crate::f::Fake;\n}\n\
             #[cfg(test)]\nfn helper() -> crate::f::Fake { crate::f::Fake }\n",
        ),
        ("src/b.rs", "pub struct Beta;\npub fn make() -> super::a::Alpha { todo!() }\n"),
        // c::inner -> d -> e -> c::inner: a 3-cycle, resolved to the deepest module (inner, not
        // c), through a nested group with `self`, a sibling a glob import brings in, and a
        // module imported under another name.
        ("src/c/mod.rs", "pub mod inner;\n"),
        ("src/c/inner.rs", "use crate::{d::{self, Delta}};\npub fn x() { d::go() }\n"),
        ("src/d.rs", "use super::*;\npub struct Delta;\npub fn go() { e::run() }\n"),
        (
            "src/e.rs",
            "use super::c::inner as deep;\npub fn run() {\n    deep::x();\n}\n",
        ),
        // f -> a only: the references back in a are in comments, strings and test code.
        ("src/f.rs", "use crate::a::Alpha;\npub struct Fake(Alpha);\n"),
        // g -> r::s through the item r re-exports; r::s -> g: a 2-cycle, although r itself
        // only contains r::s.
        ("src/g.rs", "pub struct G(crate::r::Sigma);\n"),
        ("src/r/mod.rs", "mod s;\npub use s::Sigma;\n"),
        ("src/r/s.rs", "pub struct Sigma(Box<crate::g::G>);\n"),
        // A parent using its child and a child using its parent: containment.
        ("src/p/mod.rs", "mod q;\npub use q::Q;\npub fn p() -> q::Q { q::Q }\n"),
        ("src/p/q.rs", "use super::p;\npub struct Q;\nfn f() { p(); crate::p::p(); }\n"),
    ]);
    let graph = ModuleGraph::read(&tree.path().join("src/lib.rs")).unwrap();
    let names =
        |cycle: &Vec<usize>| -> Vec<String> { cycle.iter().map(|&m| graph.name(m)).collect() };
    let cycles: Vec<Vec<String>> = graph.cycles(CYCLES_LISTED).iter().map(names).collect();
    assert_eq!(
        cycles,
        vec![
            vec!["a", "b"],
            vec!["c::inner", "d", "e"],
            vec!["g", "r::s"]
        ],
        "{:#?}",
        graph.edges
    );
    let described: String = graph
        .cycles(CYCLES_LISTED)
        .iter()
        .map(|c| graph.describe(c, tree.path()))
        .collect();
    assert!(
        described.contains("  a -> b -> a\n")
            && described.contains("    a -> b: src/a.rs:1 `crate::b::Beta`\n")
            && described.contains("    b -> a: src/b.rs:2 `super::a::Alpha`\n")
            && described.contains("    e -> c::inner: src/e.rs:1 `super::c::inner` (+1 more)\n")
            && described.contains("    g -> r::s: src/g.rs:1 `crate::r::Sigma`\n"),
        "{described}"
    );
    // The decoys in a are the only way back from f; without them f is on no cycle.
    assert!(graph
        .edges
        .keys()
        .all(|&(from, _)| graph.name(from) != "p::q"));
    assert!(graph
        .edges
        .keys()
        .any(|&(from, to)| graph.name(from) == "f" && graph.name(to) == "a"));
    assert!(
        graph.edges.keys().all(|&(_, to)| graph.name(to) != "f"),
        "{:#?}",
        graph.edges
    );
}

#[test]
fn a_declared_module_without_a_file_is_an_error() {
    let tree = source_tree(&[
        ("src/lib.rs", "mod here;\nmod gone;\n"),
        ("src/here/mod.rs", ""),
    ]);
    let error = ModuleGraph::read(&tree.path().join("src/lib.rs")).unwrap_err();
    assert!(
        error.contains("module `gone`") && !error.contains("`here`"),
        "{error}"
    );
}
