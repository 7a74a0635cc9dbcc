"""Condition expressions with no more parentheses than their meaning needs.

pynamodb writes every AND and OR of a condition in parentheses of its own: ``a & b & (c |
d)`` is sent as ``((a AND b) AND (c OR d))``. DynamoDB reads that as it reads ``a AND b AND
(c OR d)``, but the local stack's store (dynalite's PEG parser) backtracks through nested
groups: a conditional update with the first form costs it 2.1 ms of CPU, with the second
0.7 ms (measured on this project's machine; a presence report's condition is of that shape,
and the store is the local stack's busiest process). ``plain`` drops the parentheses that
change nothing: around the whole expression, around an AND inside an AND, an OR inside an
OR, and around a single comparison or function (but not after a NOT: the store refuses
``NOT NOT``). Anything it does not recognize is sent as written.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_SYMBOL = re.compile(r"\s*(?:(<>|<=|>=|[=<>(),])|([A-Za-z0-9_#:.\[\]]+))")
_CONNECTIVES = ("AND", "OR")


class _Unrecognized(ValueError):
    pass


@dataclass
class _Node:
    kind: str  # "atom" (text as written), "group", "AND", "OR", "NOT"
    text: str = ""
    parts: tuple[_Node, ...] = ()


@functools.lru_cache(maxsize=4096)
def plain(expression: str) -> str:
    """``expression`` with the parentheses that change nothing left out."""
    if "((" not in expression.replace(" ", "") and not expression.startswith("("):
        return expression
    try:
        parser = _Parser(expression)
        tree = parser.parse()
    except _Unrecognized:
        return expression
    return _write(tree, parent=None)


def _write(node: _Node, parent: str | None) -> str:
    if node.kind == "atom":
        return node.text
    if node.kind == "group":
        inner = node.parts[0]
        if parent is None or inner.kind in ("atom", "group") or inner.kind == parent:
            return _write(inner, parent)
        return f"({_write(inner, None)})"
    if node.kind == "NOT":  # its group keeps its parentheses: the store refuses NOT NOT
        child = node.parts[0]
        if child.kind == "group":
            return f"NOT ({_write(child.parts[0], None)})"
        return f"NOT {_write(child, 'NOT')}"
    return f" {node.kind} ".join(_write(part, node.kind) for part in node.parts)


class _Parser:
    """condition := or; or := and (OR and)*; and := not (AND not)*; not := NOT not |
    primary; primary := ( or ) | an operand, comparison, BETWEEN, IN or function, kept
    as written."""

    def __init__(self, expression: str) -> None:
        self.text = expression
        self.symbols: list[tuple[str, int, int]] = []  # (symbol, start, end)
        position = 0
        while position < len(expression):
            match = _SYMBOL.match(expression, position)
            if match is None:
                if expression[position:].strip():
                    raise _Unrecognized(expression)
                break
            symbol = match.group(1) or match.group(2)
            start = match.start(1) if match.group(1) else match.start(2)
            self.symbols.append((symbol, start, match.end()))
            position = match.end()
        self.at = 0

    def parse(self) -> _Node:
        node = self._or()
        if self.at != len(self.symbols):
            raise _Unrecognized(self.text)
        return node

    def _peek(self) -> str | None:
        return self.symbols[self.at][0] if self.at < len(self.symbols) else None

    def _keyword(self) -> str:
        symbol = self._peek()
        return symbol.upper() if symbol is not None else ""

    def _or(self) -> _Node:
        return self._chain("OR", self._and)

    def _and(self) -> _Node:
        return self._chain("AND", self._not)

    def _chain(self, connective: str, operand: object) -> _Node:
        assert callable(operand)
        parts = [operand()]
        while self._keyword() == connective:
            self.at += 1
            parts.append(operand())
        return parts[0] if len(parts) == 1 else _Node(connective, parts=tuple(parts))

    def _not(self) -> _Node:
        if self._keyword() == "NOT":
            self.at += 1
            return _Node("NOT", parts=(self._not(),))
        return self._primary()

    def _primary(self) -> _Node:
        if self._peek() == "(":
            self.at += 1
            inner = self._or()
            if self._peek() != ")":
                raise _Unrecognized(self.text)
            self.at += 1
            if self._peek() not in (None, ")") and self._keyword() not in _CONNECTIVES:
                raise _Unrecognized(self.text)  # an operand in parentheses: "(#a) = :b"
            return _Node("group", parts=(inner,))
        return self._atom()

    def _atom(self) -> _Node:
        """Tokens up to the next AND, OR or closing parenthesis outside this atom's own
        parentheses (a function's arguments, an IN list); BETWEEN's AND is its own."""
        first = self.at
        between = False
        while self.at < len(self.symbols):
            symbol, keyword = self._peek(), self._keyword()
            if symbol == ")" or (keyword in _CONNECTIVES and not (keyword == "AND" and between)):
                break
            if keyword == "AND":
                between = False
            elif keyword == "BETWEEN":
                between = True
            elif keyword == "NOT" or (symbol == "(" and self.at == first):
                raise _Unrecognized(self.text)
            if symbol == "(":
                self._skip_balanced()
                continue
            self.at += 1
        if self.at == first or between:
            raise _Unrecognized(self.text)
        start, end = self.symbols[first][1], self.symbols[self.at - 1][2]
        return _Node("atom", text=self.text[start:end].strip())

    def _skip_balanced(self) -> None:
        depth = 0
        while self.at < len(self.symbols):
            symbol = self._peek()
            self.at += 1
            if symbol == "(":
                depth += 1
            elif symbol == ")":
                depth -= 1
                if depth == 0:
                    return
        raise _Unrecognized(self.text)
