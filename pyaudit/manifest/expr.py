"""A tiny, safe expression language over config fields.

Family specs describe shapes and conditions as short strings such as
``"num_attention_heads * head_dim, hidden_size"`` or ``"not tie_word_embeddings"``.
They are parsed with :mod:`ast` and compiled into a tree of closures built only from
a whitelist of node types; nothing is ever passed to ``eval``/``exec``.

Semantics
---------
* Names are looked up in a mapping; a missing name is ``None``.
* ``+ - * / // % **`` on numbers (``**`` with a small non-negative exponent; ``/`` is Python's
  true division, as in ``int(1 / downsample_ratio)``), unary ``-``/``not``.
  Arithmetic with a ``None`` operand yields ``None`` (so a missing field surfaces as a
  missing dimension, which the interpreter reports, instead of a crash); on anything else
  that is not a number (a string, a list: ``[0] * heads`` would build a list of ``heads``
  items), or with a result beyond ``2**63`` or not finite, it raises :class:`ExprError`.
* ``and`` / ``or`` / ``x if c else y`` behave like Python (so ``head_dim or hidden // heads``
  is the usual "fall back when null" idiom).
* Comparisons ``== != < <= > >= in not in is is not``; an ordering comparison with ``None``
  is ``False``.
* Subscripts ``layer_types[i]`` / ``quantization_config["weight_block_size"][0]`` on lists,
  tuples and dicts (a bad index or key gives ``None``).
* Calls only to the whitelisted helpers below: ``min max cdiv len int bool log2 version
  split`` (``split("gated-gelu", "-")`` is ``["gated", "gelu"]``, as T5Config reads its
  ``feed_forward_proj``; None unless both are strings and the separator is not empty)
  (``log2(8)`` is ``int(math.log2(8))``, 3; None for anything but a positive number)
  (``version("5.24.0.dev0")`` is ``(5, 24, 0)``, comparable with a tuple such as ``(5,)``;
  ``None`` for anything that does not start with a number).
* Tuples ``a, b`` (used for shapes); lists ``[a, b]``, and ``[item for k in range(n)]`` (one
  ``for`` over ``range`` of one argument, no ``if``; ``n`` an int in [0, 2**20]; ``k`` is seen
  by ``item`` only): a per-layer list transformers fills in when a config leaves it out.
* Dotted names ``text_config.hidden_size`` read a member of a mapping (a nested config);
  ``None`` when the value is not a mapping or lacks the member. Nothing else of Python's
  attribute access is reachable.

Anything else (attribute access on anything but a mapping, other calls, lambdas,
comprehensions, names starting with an underscore, ...) is rejected at compile time with
:class:`ExprError`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["Expr", "ExprError", "compile_expr", "evaluate", "truth"]

MAX_SOURCE_LEN = 1000
MAX_POW_EXPONENT = 64
MAX_MAGNITUDE = 2**63  # no count, size or dimension of a real model comes near it
MAX_LIST = 2**20  # items a list comprehension may build

Env = Mapping[str, Any]
_Fn = Callable[[Env], Any]


class ExprError(ValueError):
    """An expression is malformed or uses something outside the safe subset."""


def _cdiv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    return -(-_int(a) // _int(b))


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ExprError(f"expected an integer, got {v!r}")
    return v


def _min(*args: Any) -> Any:
    vals = [a for a in (args[0] if len(args) == 1 else args) if a is not None]
    return min(vals) if vals else None


def _max(*args: Any) -> Any:
    vals = [a for a in (args[0] if len(args) == 1 else args) if a is not None]
    return max(vals) if vals else None


def _len(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict, str)):
        return len(v)
    return None


def _to_int(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return int(v)
    return None


def _log2(v: Any) -> Any:
    """``int(math.log2(v))`` for a positive number (an ``nn.Sequential`` of
    ``int(math.log2(subsampling_factor))`` stages), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_MAGNITUDE:
        return None
    return int(math.log2(v))


def _to_bool(v: Any) -> bool:
    return bool(v)


def _version(v: Any) -> tuple[int, ...] | None:
    """The leading dotted integers of a version string: ``"4.54.0.dev0"`` -> ``(4, 54, 0)``."""
    if not isinstance(v, str):
        return None
    parts: list[int] = []
    for piece in v.strip().split(".")[:8]:
        if not piece.isdigit() or not piece.isascii() or len(piece) > 9:
            break
        parts.append(int(piece))
    return tuple(parts) if parts else None


def _split(v: Any, sep: Any) -> list[str] | None:
    """``v.split(sep)`` for a string ``v`` and a non-empty string ``sep``, else None."""
    if not isinstance(v, str) or not isinstance(sep, str) or not sep:
        return None
    return v.split(sep)


_FUNCS: dict[str, Callable[..., Any]] = {
    "min": _min,
    "max": _max,
    "cdiv": _cdiv,
    "len": _len,
    "int": _to_int,
    "bool": _to_bool,
    "log2": _log2,
    "version": _version,
    "split": _split,
}


def truth(v: Any) -> bool:
    """A condition's value: a bool, a number or None (a missing field), never a string or
    a container (``"false"`` or ``[]`` in a config is a mistake, not a truth value)."""
    if v is None or isinstance(v, (bool, int, float)):
        return bool(v)
    what = f"{type(v).__name__} {_short(v)}"
    raise ExprError(f"a condition must be true/false or a number, not {what}")


def _number(v: Any) -> int | float:
    """``v`` when it is a finite int or float of at most MAX_MAGNITUDE, else ExprError."""
    if not isinstance(v, (int, float)):
        raise ExprError(f"arithmetic on {type(v).__name__} {_short(v)} is not allowed")
    if not abs(v) <= MAX_MAGNITUDE:  # also NaN
        raise ExprError(f"{_short(v)} is out of range (at most 2**63 in magnitude)")
    return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= MAX_POW_EXPONENT:
        raise ExprError(f"exponent must be an int in [0, {MAX_POW_EXPONENT}], got {b!r}")
    return a**b


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _pow,
}


def _in(a: Any, b: Any) -> bool:
    if isinstance(b, (list, tuple, dict, str)):
        try:
            return a in b
        except TypeError:
            return False
    return False


def _ordered(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        try:
            return fn(a, b)
        except TypeError:
            return False

    return cmp


_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: _ordered(operator.lt),
    ast.LtE: _ordered(operator.le),
    ast.Gt: _ordered(operator.gt),
    ast.GtE: _ordered(operator.ge),
    ast.In: _in,
    ast.NotIn: lambda a, b: not _in(a, b),
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


def _check_name(name: str) -> None:
    if name.startswith("_"):
        raise ExprError(f"names starting with '_' are not allowed: {name!r}")


class _Compiler:
    def __init__(self) -> None:
        self.names: set[str] = set()

    def compile(self, node: ast.AST) -> _Fn:
        method = getattr(self, "_c_" + type(node).__name__, None)
        if method is None:
            raise ExprError(f"{type(node).__name__} is not allowed in expressions")
        fn: _Fn = method(node)
        return fn

    def _c_Constant(self, node: ast.Constant) -> _Fn:
        value = node.value
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ExprError(f"constant of type {type(value).__name__} is not allowed")
        return lambda env: value

    def _c_Name(self, node: ast.Name) -> _Fn:
        name = node.id
        _check_name(name)
        if name in ("True", "False", "None"):  # pragma: no cover - parsed as Constant
            raise ExprError(name)
        self.names.add(name)
        return lambda env: env.get(name)

    def _c_Attribute(self, node: ast.Attribute) -> _Fn:
        attr = node.attr
        _check_name(attr)
        value = self.compile(node.value)

        def member(env: Env) -> Any:
            container = value(env)
            return container.get(attr) if isinstance(container, dict) else None

        return member

    def _c_Tuple(self, node: ast.Tuple) -> _Fn:
        items = [self.compile(e) for e in node.elts]
        return lambda env: tuple(f(env) for f in items)

    def _c_List(self, node: ast.List) -> _Fn:
        items = [self.compile(e) for e in node.elts]
        return lambda env: [f(env) for f in items]

    def _c_ListComp(self, node: ast.ListComp) -> _Fn:
        if len(node.generators) != 1:
            raise ExprError("a list comprehension takes one 'for'")
        gen = node.generators[0]
        if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
            raise ExprError("a list comprehension takes 'for NAME in range(n)' and no 'if'")
        it = gen.iter
        if not (
            isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.id == "range"
            and len(it.args) == 1
            and not it.keywords
            and not isinstance(it.args[0], ast.Starred)
        ):
            raise ExprError("a list comprehension iterates over range(n) only")
        var = gen.target.id
        _check_name(var)
        count = self.compile(it.args[0])
        item = self.compile(node.elt)

        def listcomp(env: Env) -> Any:
            n = count(env)
            if n is None:
                return None
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_LIST:
                raise ExprError(f"range() takes an int in [0, {MAX_LIST}], not {_short(n)}")
            return [item(_Bound(env, var, k)) for k in range(n)]

        return listcomp

    def _c_BinOp(self, node: ast.BinOp) -> _Fn:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        left, right = self.compile(node.left), self.compile(node.right)

        def binop(env: Env) -> Any:
            a, b = left(env), right(env)
            if a is None or b is None:
                return None
            try:
                return _number(op(_number(a), _number(b)))
            except ZeroDivisionError:
                return None

        return binop

    def _c_UnaryOp(self, node: ast.UnaryOp) -> _Fn:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda env: not truth(operand(env))
        if isinstance(node.op, ast.USub):

            def neg(env: Env) -> Any:
                v = operand(env)
                return None if v is None else -_number(v)

            return neg
        if isinstance(node.op, ast.UAdd):
            return operand
        raise ExprError(f"unary operator {type(node.op).__name__} is not allowed")

    def _c_BoolOp(self, node: ast.BoolOp) -> _Fn:
        values = [self.compile(v) for v in node.values]
        if isinstance(node.op, ast.And):

            def and_(env: Env) -> Any:
                v: Any = True
                for f in values:
                    v = f(env)
                    if not v:
                        return v
                return v

            return and_

        def or_(env: Env) -> Any:
            v: Any = None
            for f in values:
                v = f(env)
                if v:
                    return v
            return v

        return or_

    def _c_Compare(self, node: ast.Compare) -> _Fn:
        left = self.compile(node.left)
        ops = []
        for op_node in node.ops:
            op = _CMPOPS.get(type(op_node))
            if op is None:  # pragma: no cover - every cmpop is listed
                raise ExprError(f"comparison {type(op_node).__name__} is not allowed")
            ops.append(op)
        rights = [self.compile(c) for c in node.comparators]

        def compare(env: Env) -> bool:
            a = left(env)
            for op, rf in zip(ops, rights, strict=True):
                b = rf(env)
                if not op(a, b):
                    return False
                a = b
            return True

        return compare

    def _c_IfExp(self, node: ast.IfExp) -> _Fn:
        test, body, orelse = (self.compile(n) for n in (node.test, node.body, node.orelse))
        return lambda env: body(env) if test(env) else orelse(env)

    def _c_Subscript(self, node: ast.Subscript) -> _Fn:
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed")
        value, index = self.compile(node.value), self.compile(node.slice)

        def subscript(env: Env) -> Any:
            container, key = value(env), index(env)
            if isinstance(container, dict):
                return container.get(key) if isinstance(key, str) else None
            if isinstance(container, (list, tuple)):
                if isinstance(key, bool) or not isinstance(key, int):
                    return None
                if -len(container) <= key < len(container):
                    return container[key]
            return None

        return subscript

    def _c_Call(self, node: ast.Call) -> _Fn:
        if not isinstance(node.func, ast.Name):
            raise ExprError("only calls to whitelisted helpers are allowed")
        fname = node.func.id
        _check_name(fname)
        fn = _FUNCS.get(fname)
        if fn is None:
            raise ExprError(f"call to {fname!r} is not allowed (allowed: {sorted(_FUNCS)})")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed")
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise ExprError("starred arguments are not allowed")
            args.append(self.compile(a))
        return lambda env: fn(*(f(env) for f in args))


class _Bound(Mapping[str, Any]):
    """``env`` with one more name bound (a list comprehension's variable)."""

    __slots__ = ("_env", "_name", "_value")

    def __init__(self, env: Env, name: str, value: Any) -> None:
        self._env, self._name, self._value = env, name, value

    def __getitem__(self, key: str) -> Any:
        return self._value if key == self._name else self._env[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._value if key == self._name else self._env.get(key, default)

    def __iter__(self) -> Any:
        yield self._name
        yield from (k for k in self._env if k != self._name)

    def __len__(self) -> int:
        return len(self._env) + (self._name not in self._env)


class Expr:
    """A compiled expression: call it with a mapping of names to values."""

    __slots__ = ("_fn", "names", "source")

    def __init__(self, source: str, fn: _Fn, names: frozenset[str]) -> None:
        self.source = source
        self._fn = fn
        self.names = names

    def __call__(self, env: Env) -> Any:
        return self._fn(env)

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"


@lru_cache(maxsize=4096)
def compile_expr(source: str) -> Expr:
    """Parse and compile ``source``; raises :class:`ExprError` on anything unsafe."""
    if not isinstance(source, str):
        raise ExprError(f"expression must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_LEN:
        raise ExprError(f"expression longer than {MAX_SOURCE_LEN} characters")
    if "__" in source:
        raise ExprError("double underscores are not allowed in expressions")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse {source!r}: {exc.msg}") from None
    compiler = _Compiler()
    fn = compiler.compile(tree.body)
    return Expr(source, fn, frozenset(compiler.names))


def evaluate(source: str, env: Env) -> Any:
    """Compile (cached) and evaluate ``source`` against ``env``."""
    return compile_expr(source)(env)
