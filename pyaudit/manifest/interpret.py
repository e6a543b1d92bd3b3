"""The one interpreter: a family :class:`~pyaudit.manifest.spec.Spec` + a config -> records."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .expr import Expr, ExprError, compile_expr, truth
from .spec import TOP, Entry, Group, Linear, Repeat, Spec, T

__all__ = ["ManifestError", "Rec", "run_spec", "scope_env", "shape_of"]


class ShapeOutOfRange(ValueError):
    """A shape of more than :data:`MAX_ELEMENTS` elements."""


def shape_of(dims: tuple[Any, ...]) -> tuple[int, ...]:
    """Values a config gave as a tensor's dimensions, as a shape: non-negative ints (a float
    that is integral counts); ValueError for any other, :class:`ShapeOutOfRange` beyond
    :data:`MAX_ELEMENTS` elements."""
    shape: list[int] = []
    for d in dims:
        if isinstance(d, float) and d.is_integer():
            d = int(d)
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"{d!r} is not a dimension")
        shape.append(d)
    elements = 1
    for d in shape:
        elements *= d
    if elements > MAX_ELEMENTS:
        raise ShapeOutOfRange(f"{elements} elements, out of range")
    return tuple(shape)


class ManifestError(ValueError):
    """A manifest cannot be computed from this config (a needed field is missing or invalid)."""


@dataclass
class Rec:
    """One expected tensor, in canonical naming, before the layout renames."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str
    section: str
    kind: str | None = None
    module: str | None = None
    in_features: int | None = None
    out_features: int | None = None
    role: str | None = None
    optional: bool = False


_TEMPLATE_RE = re.compile(r"\{([^{}]+)\}")

#: No real checkpoint comes close (DeepSeek-V3 FP8: 91,991 tensors); a config asking for more
#: is corrupt or hostile, and must not make the auditor loop or exhaust memory.
MAX_TENSORS = 2_000_000
#: Elements of one tensor: its bytes (up to 8 a element) must fit a signed 64-bit size.
MAX_ELEMENTS = 2**60


@lru_cache(maxsize=2048)
def _template(text: str) -> tuple[str | Expr, ...]:
    parts: list[str | Expr] = []
    pos = 0
    for m in _TEMPLATE_RE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(compile_expr(m.group(1)))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


def scope_env(
    config: dict[str, Any], spec: Spec, scope: str, done: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The flat name -> value mapping expressions of ``scope`` are evaluated against.

    ``done`` holds the environments of scopes already built (for ``Scope.uses``).
    """
    sc = spec.scopes[scope]
    env: dict[str, Any] = dict(sc.defaults)
    for src in reversed(sc.sources):
        part = config if src == TOP else config.get(src)
        if part is not None and not isinstance(part, dict):
            raise ManifestError(
                f"{spec.model_type}: {src} must be an object, "
                f"not {type(part).__name__} {_short(part)}"
            )
        if isinstance(part, dict):
            for key, value in part.items():
                env[key] = _merged(env.get(key), value)
            for alias, name in sc.aliases.items():
                if "." in alias:  # a sub-config's field: "text_config.n_embed"
                    sub, _, inner = alias.partition(".")
                    field_name = name.partition(".")[2]
                    nested = part.get(sub)
                    if isinstance(nested, dict) and inner in nested and field_name not in nested:
                        current = env.get(sub)
                        env[sub] = {
                            **(current if isinstance(current, dict) else {}),
                            field_name: nested[inner],
                        }
                elif alias in part and name not in part:
                    env[name] = part[alias]
    for dotted, table in sc.values.items():
        head, _, member = dotted.partition(".")
        holder = env.get(head) if member else env
        if isinstance(holder, dict) and (member or head) in holder:
            holder = dict(holder)
            holder[member or head] = _renamed(holder[member or head], table)
            if member:
                env[head] = holder
            else:
                env = holder
    for key, ref in sc.uses.items():
        other, _, source = ref.partition(":")
        if done is None or other not in done:
            raise ManifestError(f"{spec.model_type}: scope {scope!r} uses unknown scope {other!r}")
        env[key] = compile_expr(source)(done[other])
    for key, source in sc.let.items():
        value = compile_expr(source)(env)
        head, _, member = key.partition(".")
        if member:  # a field of a nested config: "text_config.head_dim"
            nested = env.get(head)
            env[head] = {**(nested if isinstance(nested, dict) else {}), member: value}
        else:
            env[key] = value
    return env


def _renamed(value: Any, table: Mapping[str, str]) -> Any:
    """``value`` (a string, or a list of them) with older spellings renamed (``table``)."""
    if isinstance(value, str):
        return table.get(value, value)
    if isinstance(value, list):
        return [table.get(x, x) if isinstance(x, str) else x for x in value]
    return value


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _merged(default: Any, value: Any) -> Any:
    """``value`` over ``default``; nested configs (dicts) are merged member by member."""
    if isinstance(default, dict) and isinstance(value, dict):
        out = dict(default)
        for k, v in value.items():
            out[k] = _merged(out.get(k), v)
        return out
    return value


class _Walker:
    def __init__(self, spec: Spec, config: dict[str, Any], dtype: str) -> None:
        self.spec = spec
        self.config = config
        self.dtype = dtype
        self.bases: dict[str, dict[str, Any]] = {}
        for name in spec.scopes:
            self.bases[name] = scope_env(config, spec, name, self.bases)
        self.records: list[Rec] = []
        self.tied: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------
    def _fail(self, what: str, src: str, env: dict[str, Any], scope: str) -> ManifestError:
        names = sorted(compile_expr(src).names)
        missing = [n for n in names if env.get(n) is None]
        given = [f"{n}={_short(env[n])}" for n in names if env.get(n) is not None]
        hints = [f"missing or null: {', '.join(missing)}"] if missing else []
        hints += [f"config has {', '.join(given)}"] if given else []
        hint = f" ({'; '.join(hints)})" if hints else ""
        return ManifestError(
            f"{self.spec.model_type}: cannot compute {what} from {src!r} in scope {scope!r}{hint}"
        )

    def _eval(self, src: str, env: dict[str, Any], scope: str, what: str) -> Any:
        try:
            return compile_expr(src)(env)
        except ExprError as exc:
            raise ManifestError(f"{self.spec.model_type}: {what}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._fail(f"{what} ({exc})", src, env, scope) from None

    def _int(self, src: str, env: dict[str, Any], scope: str, what: str) -> int:
        v = self._eval(src, env, scope, what)
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise self._fail(what, src, env, scope)
        return v

    def _render(self, text: str, env: dict[str, Any], scope: str) -> str:
        if "{" not in text:
            return text
        out: list[str] = []
        for part in _template(text):
            if isinstance(part, str):
                out.append(part)
                continue
            v = self._eval(part.source, env, scope, f"name template {text!r}")
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise self._fail(f"name template {text!r}", part.source, env, scope)
            out.append(str(v))
        return "".join(out)

    def _shape(self, src: str, env: dict[str, Any], scope: str, name: str) -> tuple[int, ...]:
        v = self._eval(src, env, scope, f"shape of {name}")
        try:
            return shape_of(v if isinstance(v, tuple) else (v,))
        except ShapeOutOfRange as e:
            raise self._fail(f"shape of {name} ({e})", src, env, scope) from None
        except ValueError:
            raise self._fail(f"shape of {name}", src, env, scope) from None

    def _cond(self, src: str | None, env: dict[str, Any], scope: str) -> bool:
        if src is None:
            return True
        value = self._eval(src, env, scope, f"condition {src!r}")
        try:
            return truth(value)
        except ExprError as exc:
            raise ManifestError(f"{self.spec.model_type}: condition {src!r}: {exc}") from None

    def _env(self, scope: str, loop: dict[str, int]) -> dict[str, Any]:
        base = self.bases.get(scope)
        if base is None:
            raise ManifestError(f"{self.spec.model_type}: spec uses undefined scope {scope!r}")
        if not loop:
            return base
        env = dict(base)
        env.update(loop)
        return env

    # -- walking -----------------------------------------------------------------------
    def walk(
        self,
        entries: Sequence[Entry],
        scope: str,
        loop: dict[str, int],
        prefix: str,
        section: str,
    ) -> None:
        env = self._env(scope, loop)
        for raw in entries:
            entry: Any = raw
            if isinstance(raw, tuple):
                if len(raw) not in (2, 3):
                    raise ManifestError(f"{self.spec.model_type}: bad tensor tuple {raw!r}")
                entry = T(raw[0], raw[1], raw[2] if len(raw) == 3 else None)
            if isinstance(entry, T):
                self._tensor(entry, scope, loop, env, prefix, section)
            elif isinstance(entry, Linear):
                self._linear(entry, scope, loop, env, prefix, section)
            elif isinstance(entry, Repeat):
                sc = entry.scope or scope
                e = env if sc == scope else self._env(sc, loop)
                if not self._cond(entry.when, e, sc):
                    continue
                start = self._int(entry.start, e, sc, f"start of repeat {entry.var!r}")
                count = self._int(entry.count, e, sc, f"count of repeat {entry.var!r}")
                if start < 0 or count < 0:
                    what = f"{'start' if start < 0 else 'count'} of repeat {entry.var!r} (negative)"
                    raise self._fail(what, entry.start if start < 0 else entry.count, e, sc)
                sec = entry.section or section
                before = len(self.records)
                for i in range(start, start + count):
                    inner = dict(loop)
                    inner[entry.var] = i
                    ie = self._env(sc, inner)
                    self.walk(
                        entry.tensors, sc, inner, prefix + self._render(entry.prefix, ie, sc), sec
                    )
                    # Refuse early: the first iteration tells how many tensors each adds.
                    made = len(self.records) - before
                    projected = before + made * count if i == start else len(self.records)
                    if projected > MAX_TENSORS:
                        raise ManifestError(
                            f"{self.spec.model_type}: config describes more than {MAX_TENSORS} "
                            f"tensors ({entry.var!r} repeats {count} times); refusing"
                        )
            elif isinstance(entry, Group):
                sc = entry.scope or scope
                e = env if sc == scope else self._env(sc, loop)
                if not self._cond(entry.when, e, sc):
                    continue
                self.walk(
                    entry.tensors,
                    sc,
                    loop,
                    prefix + self._render(entry.prefix, e, sc),
                    entry.section or section,
                )
            else:
                raise ManifestError(f"{self.spec.model_type}: unknown spec entry {entry!r}")

    def _placed(
        self,
        entry: T | Linear,
        template: str,
        tie_suffix: str,
        scope: str,
        loop: dict[str, int],
        env: dict[str, Any],
        prefix: str,
    ) -> tuple[str, dict[str, Any], str] | None:
        """An entry's scope, environment and rendered name (``template``: the tensor's name,
        or a linear layer's module), or None when its condition is false; the tie of an
        absent entry (``name + tie_suffix`` is tied to its ``tied_to``) is recorded first."""
        if entry.scope and entry.scope != scope:
            scope = entry.scope
            env = self._env(scope, loop)
        name = prefix + self._render(template, env, scope)
        if not self._cond(entry.when, env, scope):
            if entry.tied_to is not None:
                self.tied[name + tie_suffix] = prefix + self._render(entry.tied_to, env, scope)
            return None
        return scope, env, name

    def _tensor(
        self,
        t: T,
        scope: str,
        loop: dict[str, int],
        env: dict[str, Any],
        prefix: str,
        section: str,
    ) -> None:
        placed = self._placed(t, t.name, "", scope, loop, env, prefix)
        if placed is None:
            return
        scope, env, name = placed
        rec = Rec(
            name=name,
            shape=self._shape(t.shape, env, scope, name),
            dtype=t.dtype or (t.fp16_dtype if t.fp16_dtype and self.dtype == "F16" else self.dtype),
            section=t.section or section,
            kind=t.kind,
            role=t.role,
            optional=t.optional,
        )
        if t.module is not None:
            rec.module = prefix + self._render(t.module, env, scope)
            if t.in_features is not None:
                rec.in_features = self._int(t.in_features, env, scope, f"in_features of {name}")
            if t.out_features is not None:
                rec.out_features = self._int(t.out_features, env, scope, f"out_features of {name}")
        self.records.append(rec)

    def _linear(
        self,
        lin: Linear,
        scope: str,
        loop: dict[str, int],
        env: dict[str, Any],
        prefix: str,
        section: str,
    ) -> None:
        placed = self._placed(lin, lin.module, ".weight", scope, loop, env, prefix)
        if placed is None:
            return
        scope, env, module = placed
        out_f = self._int(lin.out_features, env, scope, f"out_features of {module}")
        in_f = self._int(lin.in_features, env, scope, f"in_features of {module}")
        sec = lin.section or section
        dtype = lin.dtype or self.dtype
        self.records.append(
            Rec(
                module + ".weight",
                (out_f, in_f),
                dtype,
                sec,
                lin.kind,
                module,
                in_f,
                out_f,
                "weight",
            )
        )
        has_bias = lin.bias if isinstance(lin.bias, bool) else self._cond(lin.bias, env, scope)
        if has_bias:
            self.records.append(
                Rec(module + ".bias", (out_f,), dtype, sec, lin.kind, module, in_f, out_f, "bias")
            )


def run_spec(spec: Spec, config: dict[str, Any], dtype: str) -> tuple[list[Rec], dict[str, str]]:
    """Interpret ``spec`` against ``config``: the expected records (canonical names) and ties."""
    walker = _Walker(spec, config, dtype)
    walker.walk(spec.tensors, spec.default_scope, {}, "", spec.default_section)
    return walker.records, walker.tied
