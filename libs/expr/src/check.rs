//! Compile-time check of the variables an expression refers to.

use cel::IdedExpr;
use cel::common::ast::{EntryExpr, Expr};

use crate::env::{FUNCTION_NAMESPACES, env};

/// An identifier that names no allowed variable.
pub(crate) struct Unknown<'a> {
    /// The identifier.
    pub name: &'a str,
    /// The id of its node, to look its position up.
    pub id: u64,
}

/// Every free identifier in `expr` that is neither in `allowed`, nor a
/// variable bound by a comprehension (`x` in `list.all(x, ...)`), nor a type
/// name (`int`, `string`, ...), in tree order.
pub(crate) fn unknown_variables<'a>(expr: &'a IdedExpr, allowed: &[&str]) -> Vec<Unknown<'a>> {
    let mut walker = Walker {
        allowed,
        bound: Vec::new(),
        found: Vec::new(),
    };
    walker.walk(expr);
    walker.found
}

struct Walker<'a, 'l> {
    allowed: &'l [&'l str],
    /// Names bound by the comprehensions being walked, innermost last.
    bound: Vec<&'a str>,
    found: Vec<Unknown<'a>>,
}

impl<'a> Walker<'a, '_> {
    fn walk(&mut self, node: &'a IdedExpr) {
        match &node.expr {
            Expr::Ident(name) => self.ident(name, node.id),
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    let namespace_call = matches!(
                        &target.expr,
                        Expr::Ident(prefix)
                            if FUNCTION_NAMESPACES.contains(&prefix.as_str())
                                && !self.is_variable(prefix)
                    );
                    if !namespace_call {
                        self.walk(target);
                    }
                }
                for arg in &call.args {
                    self.walk(arg);
                }
            }
            Expr::Select(select) => self.walk(&select.operand),
            Expr::List(list) => {
                for element in &list.elements {
                    self.walk(element);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    self.entry(&entry.expr);
                }
            }
            Expr::Struct(strukt) => {
                for entry in &strukt.entries {
                    self.entry(&entry.expr);
                }
            }
            Expr::Comprehension(comp) => {
                // The range and the initial accumulator see the outer scope.
                self.walk(&comp.iter_range);
                self.walk(&comp.accu_init);
                let depth = self.bound.len();
                self.bound.push(&comp.iter_var);
                if let Some(second) = &comp.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&comp.accu_var);
                self.walk(&comp.loop_cond);
                self.walk(&comp.loop_step);
                self.walk(&comp.result);
                self.bound.truncate(depth);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entry(&mut self, entry: &'a EntryExpr) {
        match entry {
            EntryExpr::StructField(field) => self.walk(&field.value),
            EntryExpr::MapEntry(map_entry) => {
                self.walk(&map_entry.key);
                self.walk(&map_entry.value);
            }
        }
    }

    fn is_variable(&self, name: &str) -> bool {
        self.allowed.contains(&name) || self.bound.contains(&name)
    }

    fn ident(&mut self, name: &'a str, id: u64) {
        // Names the macros make up for themselves start with `@`.
        if self.is_variable(name) || name.starts_with('@') {
            return;
        }
        if env().types().find_type(name).is_some() {
            return;
        }
        self.found.push(Unknown { name, id });
    }
}
