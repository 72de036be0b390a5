//! Definitions and references of one source file, by tree-sitter tag queries: those that ship
//! with tree-sitter-rust and tree-sitter-python (`queries/tags.scm`), extended with constants,
//! statics, type and path uses (Rust), and base classes, decorators, imported names and
//! annotations (Python). A capture `def.KIND` is a definition's name, `ref` a reference; a node
//! captured as both is a definition only. Broken syntax still gives the tags of what parsed.

use std::collections::{BTreeMap, HashSet};

use streaming_iterator::StreamingIterator;
use tree_sitter::{Language, Parser, Query, QueryCursor};

use crate::repomap::{Def, Lang, MapError, MAX_LINE_CHARS};

const RUST_QUERY: &str = r#"
(struct_item name: (type_identifier) @def.struct)
(enum_item name: (type_identifier) @def.enum)
(union_item name: (type_identifier) @def.union)
(type_item name: (type_identifier) @def.type)
(function_item name: (identifier) @def.fn)
(function_signature_item name: (identifier) @def.fn)
(trait_item name: (type_identifier) @def.trait)
(mod_item name: (identifier) @def.mod)
(macro_definition name: (identifier) @def.macro)
(const_item name: (identifier) @def.const)
(static_item name: (identifier) @def.static)
(call_expression function: (identifier) @ref)
(call_expression function: (field_expression field: (field_identifier) @ref))
(macro_invocation macro: (identifier) @ref)
(scoped_identifier name: (identifier) @ref)
(scoped_identifier path: (identifier) @ref)
(scoped_type_identifier name: (type_identifier) @ref)
(use_list (identifier) @ref)
(use_as_clause path: (identifier) @ref)
(type_identifier) @ref
"#;

const PYTHON_QUERY: &str = r#"
(class_definition name: (identifier) @def.class)
(function_definition name: (identifier) @def.def)
(module (expression_statement (assignment left: (identifier) @def.const)))
(call function: (identifier) @ref)
(call function: (attribute attribute: (identifier) @ref))
(class_definition superclasses: (argument_list (identifier) @ref))
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @ref)))
(decorator (identifier) @ref)
(import_from_statement name: (dotted_name (identifier) @ref))
(import_from_statement name: (aliased_import name: (dotted_name (identifier) @ref)))
(type (identifier) @ref)
(type (generic_type (identifier) @ref))
"#;

/// A file's definitions (in source order) and referenced names with their counts (by name).
pub type Tags = (Vec<Def>, Vec<(String, usize)>);

/// Compiled queries for both languages; shared by the threads of a build (a `Parser` is not).
pub struct Tagger {
    rust: (Language, Query),
    python: (Language, Query),
}

impl Tagger {
    pub fn new() -> Result<Self, MapError> {
        let compile = |lang: Language, q: &str| {
            Query::new(&lang, q)
                .map(|query| (lang, query))
                .map_err(|e| MapError::Grammar(e.to_string()))
        };
        Ok(Self {
            rust: compile(tree_sitter_rust::LANGUAGE.into(), RUST_QUERY)?,
            python: compile(tree_sitter_python::LANGUAGE.into(), PYTHON_QUERY)?,
        })
    }

    /// The definitions (in source order) and references (name, count; sorted by name) of
    /// `source`; `None` when the parser gives up.
    pub fn tag(&self, parser: &mut Parser, lang: Lang, source: &str) -> Option<Tags> {
        let (language, query) = match lang {
            Lang::Rust => &self.rust,
            Lang::Python => &self.python,
        };
        parser.set_language(language).ok()?;
        let tree = parser.parse(source, None)?;
        let src = source.as_bytes();
        let names = query.capture_names();
        let mut defs: Vec<Def> = Vec::new();
        let mut def_nodes = HashSet::new();
        let mut refs: Vec<(usize, String)> = Vec::new();
        let mut cursor = QueryCursor::new();
        let mut captures = cursor.captures(query, tree.root_node(), src);
        while let Some((m, i)) = captures.next() {
            let c = m.captures[*i];
            let Ok(name) = c.node.utf8_text(src) else {
                continue;
            };
            let capture = names[c.index as usize];
            if let Some(kind) = capture.strip_prefix("def.") {
                if def_nodes.insert(c.node.id()) {
                    let line = c.node.start_position().row;
                    defs.push(Def {
                        name: name.to_string(),
                        kind: kind_label(kind),
                        line,
                        text: line_text(source, line),
                    });
                }
            } else {
                refs.push((c.node.id(), name.to_string()));
            }
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (id, name) in refs {
            // A node matched by several reference patterns counts once.
            if !def_nodes.contains(&id) && seen.insert(id) {
                *counts.entry(name).or_default() += 1;
            }
        }
        defs.sort_by_key(|d| d.line);
        Some((defs, counts.into_iter().collect()))
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "struct" => "struct",
        "enum" => "enum",
        "union" => "union",
        "type" => "type",
        "fn" => "fn",
        "trait" => "trait",
        "mod" => "mod",
        "macro" => "macro",
        "const" => "const",
        "static" => "static",
        "class" => "class",
        "def" => "def",
        _ => "item",
    }
}

/// Line `row` of `source`, trimmed and cut to `MAX_LINE_CHARS` characters.
fn line_text(source: &str, row: usize) -> String {
    let line = source.lines().nth(row).unwrap_or("").trim();
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Whether `bytes` can be tagged as text: no NUL in the first 8 KiB (as git decides) and UTF-8.
pub fn as_text(bytes: Vec<u8>) -> Option<String> {
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(lang: Lang, src: &str) -> (Vec<Def>, Vec<(String, usize)>) {
        Tagger::new()
            .unwrap()
            .tag(&mut Parser::new(), lang, src)
            .unwrap()
    }

    fn names(defs: &[Def]) -> Vec<(&str, &str, usize)> {
        defs.iter()
            .map(|d| (d.kind, d.name.as_str(), d.line))
            .collect()
    }

    #[test]
    fn rust_definitions_and_references() {
        let src = "use crate::a::{Widget, helper};\n\
                   pub struct Point { x: i32 }\n\
                   impl Point {\n    pub fn new() -> Self { helper(); Point { x: make_x() } }\n}\n\
                   const MAX: usize = 3;\n\
                   fn run(w: &Widget) { w.draw(); Point::new(); vec![1]; }\n";
        let (defs, refs) = tag(Lang::Rust, src);
        assert_eq!(
            names(&defs),
            [
                ("struct", "Point", 1),
                ("fn", "new", 3),
                ("const", "MAX", 5),
                ("fn", "run", 6)
            ]
        );
        assert_eq!(defs[0].text, "pub struct Point { x: i32 }");
        let r: BTreeMap<_, _> = refs.into_iter().collect();
        // `Point` is used in `impl Point`, `-> Self`'s struct literal `Point {}` and `Point::new`.
        assert_eq!(r.get("Point"), Some(&3), "{r:?}");
        for n in ["Widget", "helper", "make_x", "draw", "new", "vec"] {
            assert!(r.contains_key(n), "{n} missing from {r:?}");
        }
    }

    #[test]
    fn python_definitions_and_references() {
        let src = "from pkg.mod import Base, tool\n\
                   LIMIT = 10\n\
                   class Child(Base):\n    @cached\n    def run(self, x: Widget) -> int:\n        \
                   return tool(x) + self.step()\n";
        let (defs, refs) = tag(Lang::Python, src);
        assert_eq!(
            names(&defs),
            [
                ("const", "LIMIT", 1),
                ("class", "Child", 2),
                ("def", "run", 4)
            ]
        );
        let r: BTreeMap<_, _> = refs.into_iter().collect();
        for n in ["Base", "tool", "cached", "Widget", "step"] {
            assert!(r.contains_key(n), "{n} missing from {r:?}");
        }
        assert_eq!(r.get("Base"), Some(&2), "import and base class: {r:?}");
    }

    #[test]
    fn broken_syntax_binary_and_odd_text_never_panic() {
        let t = Tagger::new().unwrap();
        let mut p = Parser::new();
        let (defs, _) = t
            .tag(&mut p, Lang::Rust, "fn ok() {}\nfn broken( {{{\nstruct S;")
            .unwrap();
        assert!(defs.iter().any(|d| d.name == "ok"), "{defs:?}");
        for junk in ["", "\u{feff}", ")))(((", "def (:\n\tclass", "é\u{200b}"] {
            t.tag(&mut p, Lang::Python, junk).unwrap();
            t.tag(&mut p, Lang::Rust, junk).unwrap();
        }
        assert_eq!(as_text(b"abc\0def".to_vec()), None);
        assert_eq!(as_text(vec![0xff, 0xfe]), None);
        assert_eq!(as_text(b"x = 1".to_vec()).as_deref(), Some("x = 1"));
        let long = format!("fn {}() {{}}", "a".repeat(300));
        let (defs, _) = t.tag(&mut p, Lang::Rust, &long).unwrap();
        assert_eq!(defs[0].text.chars().count(), MAX_LINE_CHARS + 1);
    }
}
