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

#[path = "module_cycles/graph.rs"]
mod graph;
#[path = "module_cycles/lex.rs"]
mod lex;

use graph::{targets, ModuleGraph};

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
