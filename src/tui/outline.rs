//! Code outlines with tree-sitter for Rust and Python: functions, methods, classes, structs,
//! enums, traits, impls and modules, with their line ranges, in source order and nested by depth.
//! Node kinds and field names are those of the tree-sitter-rust and tree-sitter-python grammars.

use tree_sitter::{Language, Node, Parser};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Function,
    Method,
    Class,
    Struct,
    Enum,
    Trait,
    Impl,
    Module,
}

impl SymbolKind {
    pub fn label(self) -> &'static str {
        match self {
            SymbolKind::Function => "fn",
            SymbolKind::Method => "method",
            SymbolKind::Class => "class",
            SymbolKind::Struct => "struct",
            SymbolKind::Enum => "enum",
            SymbolKind::Trait => "trait",
            SymbolKind::Impl => "impl",
            SymbolKind::Module => "mod",
        }
    }
}

/// One entry of an outline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub kind: SymbolKind,
    pub name: String,
    /// 0-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
    pub depth: usize,
}

/// The languages that have outlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlineLang {
    Rust,
    Python,
}

impl OutlineLang {
    /// By file extension (`rs`, `py`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "rs" => Some(Self::Rust),
            "py" | "pyi" => Some(Self::Python),
            _ => None,
        }
    }

    fn language(self) -> Language {
        match self {
            Self::Rust => tree_sitter_rust::LANGUAGE.into(),
            Self::Python => tree_sitter_python::LANGUAGE.into(),
        }
    }
}

/// Parses `source` and returns its outline; an error only if the grammar cannot be loaded or the
/// parser gives up (syntax errors still give a best-effort outline).
pub fn outline(lang: OutlineLang, source: &str) -> anyhow::Result<Vec<Symbol>> {
    let mut parser = Parser::new();
    parser
        .set_language(&lang.language())
        .map_err(|e| anyhow::anyhow!("tree-sitter grammar version mismatch: {e}"))?;
    let tree = parser
        .parse(source, None)
        .ok_or_else(|| anyhow::anyhow!("tree-sitter could not parse the file"))?;
    let mut out = Vec::new();
    let src = source.as_bytes();
    match lang {
        OutlineLang::Rust => walk_rust(tree.root_node(), src, 0, false, &mut out),
        OutlineLang::Python => walk_python(tree.root_node(), src, 0, false, &mut out),
    }
    Ok(out)
}

fn text(node: Option<Node>, src: &[u8]) -> String {
    node.and_then(|n| n.utf8_text(src).ok())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn push(out: &mut Vec<Symbol>, kind: SymbolKind, name: String, node: Node, depth: usize) {
    out.push(Symbol {
        kind,
        name,
        start_line: node.start_position().row,
        end_line: node.end_position().row,
        depth,
    });
}

fn walk_rust(node: Node, src: &[u8], depth: usize, in_impl: bool, out: &mut Vec<Symbol>) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        let name = || text(child.child_by_field_name("name"), src);
        match child.kind() {
            "function_item" | "function_signature_item" => {
                let kind = if in_impl {
                    SymbolKind::Method
                } else {
                    SymbolKind::Function
                };
                push(out, kind, name(), child, depth);
            }
            "struct_item" => push(out, SymbolKind::Struct, name(), child, depth),
            "enum_item" => push(out, SymbolKind::Enum, name(), child, depth),
            "trait_item" | "impl_item" => {
                let (kind, label) = if child.kind() == "trait_item" {
                    (SymbolKind::Trait, name())
                } else {
                    let ty = text(child.child_by_field_name("type"), src);
                    match child.child_by_field_name("trait") {
                        Some(tr) => (
                            SymbolKind::Impl,
                            format!("{} for {ty}", text(Some(tr), src)),
                        ),
                        None => (SymbolKind::Impl, ty),
                    }
                };
                push(out, kind, label, child, depth);
                if let Some(body) = child.child_by_field_name("body") {
                    walk_rust(body, src, depth + 1, true, out);
                }
            }
            "mod_item" => {
                push(out, SymbolKind::Module, name(), child, depth);
                if let Some(body) = child.child_by_field_name("body") {
                    walk_rust(body, src, depth + 1, false, out);
                }
            }
            _ => {}
        }
    }
}

fn walk_python(node: Node, src: &[u8], depth: usize, in_class: bool, out: &mut Vec<Symbol>) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        let def = if child.kind() == "decorated_definition" {
            child.child_by_field_name("definition")
        } else {
            Some(child)
        };
        let Some(def) = def else { continue };
        let name = text(def.child_by_field_name("name"), src);
        match def.kind() {
            "function_definition" => {
                let kind = if in_class {
                    SymbolKind::Method
                } else {
                    SymbolKind::Function
                };
                push(out, kind, name, child, depth);
                if let Some(body) = def.child_by_field_name("body") {
                    walk_python(body, src, depth + 1, false, out);
                }
            }
            "class_definition" => {
                push(out, SymbolKind::Class, name, child, depth);
                if let Some(body) = def.child_by_field_name("body") {
                    walk_python(body, src, depth + 1, true, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lang: OutlineLang, src: &str, expected: &[(SymbolKind, &str, usize, usize, usize)]) {
        let got: Vec<_> = outline(lang, src)
            .unwrap()
            .into_iter()
            .map(|s| (s.kind, s.name, s.start_line, s.end_line, s.depth))
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(k, n, a, b, d)| (*k, n.to_string(), *a, *b, *d))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rust_outline() {
        use SymbolKind::*;
        let src = "\
struct Point { x: i32 }
enum E { A }
impl Point {
    fn new() -> Self { Point { x: 0 } }
    pub fn get(&self) -> i32 { self.x }
}
trait Shape {
    fn area(&self) -> f64;
}
impl Shape for Point {
    fn area(&self) -> f64 { 0.0 }
}
mod inner {
    fn helper() {}
}
fn main() {
    fn nested_is_not_listed() {}
}
";
        check(
            OutlineLang::Rust,
            src,
            &[
                (Struct, "Point", 0, 0, 0),
                (Enum, "E", 1, 1, 0),
                (Impl, "Point", 2, 5, 0),
                (Method, "new", 3, 3, 1),
                (Method, "get", 4, 4, 1),
                (Trait, "Shape", 6, 8, 0),
                (Method, "area", 7, 7, 1),
                (Impl, "Shape for Point", 9, 11, 0),
                (Method, "area", 10, 10, 1),
                (Module, "inner", 12, 14, 0),
                (Function, "helper", 13, 13, 1),
                (Function, "main", 15, 17, 0),
            ],
        );
    }

    #[test]
    fn python_outline() {
        use SymbolKind::*;
        let src = "\
import os

class Greeter:
    def __init__(self, name):
        self.name = name

    @staticmethod
    def hello():
        def inner():
            pass
        return 1

def main():
    pass
";
        check(
            OutlineLang::Python,
            src,
            &[
                (Class, "Greeter", 2, 10, 0),
                (Method, "__init__", 3, 4, 1),
                (Method, "hello", 6, 10, 1),
                (Function, "inner", 8, 9, 2),
                (Function, "main", 12, 13, 0),
            ],
        );
    }

    #[test]
    fn broken_source_still_gives_an_outline() {
        let got = outline(OutlineLang::Rust, "fn ok() {}\nfn broken( {\n").unwrap();
        assert_eq!(got[0].name, "ok");
        assert_eq!(OutlineLang::from_extension("py"), Some(OutlineLang::Python));
        assert_eq!(OutlineLang::from_extension("txt"), None);
    }
}
