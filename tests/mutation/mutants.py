"""The mutants of a Python source file: small, plausible mistakes, one at a time.

Each mutant changes one operator or constant of the file's syntax tree (an arithmetic or
comparison operator, a boolean connective, a negation, a number, True/False) and is written
back with ast.unparse. Docstrings, strings, annotations, decorators and lines marked
`# pragma: no mutate` are left alone: they do not decide results.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

# One replacement per operator: the mistake most likely to be made and to matter.
BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
          ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.MatMult: ast.Mult}
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
BOOLEAN = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
          ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@",
          ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
          ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.And: "and", ast.Or: "or"}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository root
    index: int  # the mutation's position in the file's list
    line: int
    description: str

    @property
    def key(self) -> str:
        return f"{self.path}:{self.line}:{self.index}"


def _constant_mutation(value):
    """The replacement of a number or bool, or None where the constant is left alone."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return 0.0 if value == 1.0 else (1.0 if value == 0.0 else value * 2.0)
    return None


class _Sites(ast.NodeVisitor):
    """Walks the tree in a fixed order and lists (node, field, replacement, description)."""

    def __init__(self, skip_lines: set[int]):
        self.sites: list[tuple] = []
        self.skip_lines = skip_lines

    def _add(self, node, how, description):
        if getattr(node, "lineno", None) in self.skip_lines:
            return
        self.sites.append((node, how, description))

    def _visit_body(self, body):
        for i, stmt in enumerate(body):
            if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                continue  # a docstring
            self.visit(stmt)

    def visit_Module(self, node):
        self._visit_body(node.body)

    def _visit_function(self, node):
        # defaults are visited (a changed default changes results); annotations and decorators not
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self._visit_body(node.body)

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node):
        self._visit_body(node.body)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_If(self, node):
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_JoinedStr(self, node):
        return  # messages

    def visit_BinOp(self, node):
        if type(node.op) in BINARY:
            new = BINARY[type(node.op)]
            self._add(node, ("op", new), f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}")
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        if type(node.op) in BINARY:
            new = BINARY[type(node.op)]
            self._add(node, ("op", new), f"{SYMBOL[type(node.op)]}= -> {SYMBOL[new]}=")
        self.generic_visit(node)

    def visit_Compare(self, node):
        for k, op in enumerate(node.ops):
            if type(op) in COMPARE:
                new = COMPARE[type(op)]
                self._add(node, ("cmp", k, new), f"{SYMBOL[type(op)]} -> {SYMBOL[new]}")
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        new = BOOLEAN[type(node.op)]
        self._add(node, ("op", new), f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            self._add(node, ("drop",), "not x -> x")
        elif isinstance(node.op, ast.USub):
            self._add(node, ("drop",), "-x -> x")
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self._add(node, ("negate_test",), "a if c else b -> a if not c else b")
        self.generic_visit(node)

    def visit_Constant(self, node):
        new = _constant_mutation(node.value)
        if new is not None:
            self._add(node, ("const", new), f"{node.value!r} -> {new!r}")


def _skip_lines(source: str) -> set[int]:
    return {i + 1 for i, line in enumerate(source.splitlines()) if "pragma: no mutate" in line}


def sites(source: str) -> list[tuple]:
    tree = ast.parse(source)
    visitor = _Sites(_skip_lines(source))
    visitor.visit(tree)
    return visitor.sites


def mutants(path: str, source: str) -> list[Mutant]:
    return [Mutant(path, i, node.lineno, description) for i, (node, _, description) in enumerate(sites(source))]


class _Apply(ast.NodeTransformer):
    def __init__(self, target_index: int, source: str):
        self.target = sites(source)[target_index]

    def visit(self, node):
        node = self.generic_visit(node) or node
        target, how, _ = self.target
        if node is not target:
            return node
        kind = how[0]
        if kind == "op":
            node.op = how[1]()
        elif kind == "cmp":
            node.ops[how[1]] = how[2]()
        elif kind == "drop":
            return node.operand
        elif kind == "negate_test":
            node.test = ast.UnaryOp(ast.Not(), node.test)
        elif kind == "const":
            node.value = how[1]
        return node


def mutated_source(source: str, index: int) -> str:
    """The file's source with mutation `index` applied (the rest unparsed unchanged)."""
    tree = ast.parse(source)
    # sites() and this walk parse the same text, so the index-th site is the same node
    applier = _Apply.__new__(_Apply)
    applier.target = sites_of_tree(tree, source)[index]
    tree = applier.visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


def sites_of_tree(tree, source: str) -> list[tuple]:
    visitor = _Sites(_skip_lines(source))
    visitor.visit(tree)
    return visitor.sites
