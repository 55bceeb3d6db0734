"""The ``reproduces:`` and ``expect:`` sections: a published claim and its checks, as data.

An experiment file may state the claim it reproduces and the numbers that claim predicts,
as checks on the stored metrics (``rnnlab reproduce`` evaluates them; ``docs/reproductions.md``
shows the format with examples)::

    reproduces:
      claim: "An IRNN learns the adding problem at T = 150; a tanh RNN does not"
      source: "Le, Jaitly & Hinton 2015, §4.1, Fig. 2"
      runtime: "about 4 min on a 2-core CPU"
    expect:
      - check: IRNN learns
        runs: {model.activation: relu}   # which runs (omit: all)
        value: "{eval/loss_ratio}"       # one number per run
        reduce: max                      # one number over the runs
        expect: "< 0.5"                  # the claim: < <= > >= a number, or "1.28 ± 0.1"
        source: "Fig. 2: the IRNN's MSE falls far below the baseline"

A ``value`` is an expression over placeholders: ``{metric}`` is the run's last logged value of
a metric (``rnnlab.measure.names``), ``{metric@N}`` its value at step N, ``{task.seq_len}``
(any dotted param key) the run's setting. It is parsed with :mod:`ast` and evaluated by
:func:`Expression.evaluate`, never by ``eval``: numbers, + − * / **, comparisons,
and/or/not and abs, log, exp, sqrt, min, max, over float64 arrays with IEEE semantics
(1/0 = inf, log(0) = −inf, sqrt(−1) = nan; a comparison with nan is false).

Nothing here is part of ``RunConfig``: checks change no run_key. Torch-free, like the config.
"""

from __future__ import annotations

import ast
import difflib
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rnnlab.measure import names
from rnnlab.model.cells import logged_by
from rnnlab.options import Options

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
"""``{name}`` or ``{name@step}`` in a value expression."""
MAX_EXPRESSION = 1000
"""Characters in one expression (it is a formula, not a program)."""
Reducer = Literal["max", "min", "median", "mean", "fraction", "crossing"]


# ---------------------------------------------------------------------- expressions
FUNCTIONS = {"abs": 1, "log": 1, "exp": 1, "sqrt": 1, "min": 2, "max": 2}
"""The functions an expression may call, with their number of arguments (min and max: two
or more, elementwise)."""
OPERATORS = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide"}
OPERATORS |= {ast.Pow: "power"}
COMPARISONS = {ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater"}
COMPARISONS |= {ast.GtE: "greater_equal", ast.Eq: "equal", ast.NotEq: "not_equal"}
"""Python's operators → the numpy functions that evaluate them over float64 arrays."""
MAX_DEPTH = 64
"""Nesting of one expression's syntax tree."""


def _call(name: str, args: list):
    import numpy as np

    if name in ("min", "max"):  # elementwise over arrays and scalars alike
        return functools.reduce(np.minimum if name == "min" else np.maximum, args)
    return getattr(np, name)(args[0])


@dataclass(frozen=True)
class Term:
    """One placeholder: a metric (its last value, or its value at ``step``) or a param."""

    name: str
    step: int | None = None  # {metric@step}; None: the last logged value

    @property
    def text(self) -> str:
        return "{" + self.name + ("" if self.step is None else f"@{self.step}") + "}"


@dataclass(frozen=True)
class Expression:
    """A parsed value expression: its placeholders (``terms``, variable ``_i`` is term i) and
    its syntax tree, every node checked against the allowed set."""

    text: str
    terms: tuple[Term, ...]
    tree: ast.Expression

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Raises ``ValueError`` with a one-line reason for anything not allowed."""
        if len(text) > MAX_EXPRESSION:
            raise ValueError(f"longer than {MAX_EXPRESSION} characters")
        terms: list[Term] = []

        def variable(m: re.Match) -> str:
            inner = m.group(1).strip()
            name, at, step = inner.partition("@")
            name, step = name.strip(), step.strip()
            if not name or (at and not step.isdigit()):
                raise ValueError(
                    f"{m.group(0)}: write {{metric}}, {{metric@STEP}} (a step number) or "
                    "{param.key}"
                )
            term = Term(name, int(step) if at else None)
            if term not in terms:
                terms.append(term)
            return f" _{terms.index(term)} "

        if re.search(r"\b_\d+\b", PLACEHOLDER.sub(" ", text)):  # the placeholders' own names
            raise ValueError("names like _0 are reserved; write metrics and params in braces")
        source = PLACEHOLDER.sub(variable, text)
        if "{" in source or "}" in source:
            raise ValueError("unbalanced { } (placeholders are {metric} or {param.key})")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"syntax error ({e.msg})") from None
        except (RecursionError, MemoryError):
            raise ValueError("nested too deep") from None
        nodes, called = [(tree, 0)], set()
        while nodes:  # iteratively: a hostile nesting never reaches Python's recursion limit
            node, depth = nodes.pop()
            if depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} deep")
            _allowed(node, len(terms), id(node) in called)
            if isinstance(node, ast.Call):
                called.add(id(node.func))
            nodes += [(child, depth + 1) for child in ast.iter_child_nodes(node)]
        return cls(text, tuple(terms), tree)

    def evaluate(self, values: list[Any]):
        """The expression over ``values[i]`` for term i (floats or float arrays, one entry
        per run): a float64 array; booleans are 1.0 and 0.0, a nan is false."""
        import numpy as np

        def truth(v):
            return (v == v) & (v != 0)

        def ev(node: ast.AST):
            match node:
                case ast.Expression(body=body):
                    return ev(body)
                case ast.Constant(value=v):
                    return np.float64(v)
                case ast.Name(id=name):
                    return np.asarray(values[int(name[1:])], dtype=np.float64)
                case ast.UnaryOp(op=ast.USub(), operand=x):
                    return -ev(x)
                case ast.UnaryOp(op=ast.UAdd(), operand=x):
                    return ev(x)
                case ast.UnaryOp(op=ast.Not(), operand=x):
                    return (~truth(ev(x))).astype(np.float64)
                case ast.BinOp(left=a, op=op, right=b):
                    return getattr(np, OPERATORS[type(op)])(ev(a), ev(b))
                case ast.BoolOp(op=op, values=xs):
                    reduce = np.logical_and if isinstance(op, ast.And) else np.logical_or
                    return reduce.reduce([truth(ev(x)) for x in xs]).astype(np.float64)
                case ast.Compare(left=left, ops=ops, comparators=rights):
                    out, a = np.True_, ev(left)
                    for op, right in zip(ops, rights, strict=True):
                        b = ev(right)
                        out = out & getattr(np, COMPARISONS[type(op)])(a, b)
                        a = b
                    return np.asarray(out, dtype=np.float64)
                case ast.Call(func=ast.Name(id=name), args=args):
                    return _call(name, [ev(x) for x in args])
            raise AssertionError(f"unchecked node {ast.dump(node)}")  # _allowed refused it

        with np.errstate(all="ignore"):
            return np.asarray(ev(self.tree), dtype=np.float64)


def _allowed(node: ast.AST, n_terms: int, called: bool) -> None:
    """Refuse every node but numbers, placeholders, arithmetic, comparisons, and/or/not and
    calls of the allowed functions (``called``: the node is the function of a call)."""
    match node:
        case ast.Expression() | ast.Load() | ast.And() | ast.Or() | ast.Not():
            return
        case ast.USub() | ast.UAdd() | ast.BoolOp() | ast.UnaryOp() | ast.Compare():
            return
        case _ if type(node) in COMPARISONS or type(node) in OPERATORS:
            return
        case ast.Constant(value=v) if isinstance(v, int | float) and not isinstance(v, bool):
            if isinstance(v, int) and abs(v) > 2**1000:
                raise ValueError(f"a number of {len(str(v))} digits is too large")
            return
        case ast.Constant(value=v):
            raise ValueError(f"{v!r}: only numbers may be written as constants")
        case ast.BinOp(op=op) if type(op) in OPERATORS:
            return
        case ast.BinOp():
            raise ValueError("operator not allowed: use + - * / ** only")
        case ast.Name(id=name) if re.fullmatch(r"_\d+", name) and int(name[1:]) < n_terms:
            return
        case ast.Name(id=name) if name in FUNCTIONS and called:
            return
        case ast.Name(id=name) if name in FUNCTIONS:
            raise ValueError(f"{name} is a function: call it, e.g. {name}({{eval/loss}})")
        case ast.Name(id=name):
            raise ValueError(
                f"unknown name {name!r}: write metrics and params in braces, e.g. "
                "{eval/loss_ratio} or {task.seq_len}"
            )
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in FUNCTIONS:
            want = FUNCTIONS[name]
            if len(args) != want if want == 1 else len(args) < want:
                need = "one argument" if want == 1 else "two or more arguments"
                raise ValueError(f"{name}() takes {need}, got {len(args)}")
            return
        case ast.Call():
            raise ValueError(f"only calls of {', '.join(FUNCTIONS)} are allowed")
    what = type(node).__name__
    raise ValueError(f"{what} is not allowed (numbers, {{…}}, + - * / **, comparisons, and/or/not)")


# ---------------------------------------------------------------------- comparisons
EXPECTATION = re.compile(
    r"\s*(?:(?P<op><=|>=|<|>)\s*(?P<bound>\S+)|(?P<centre>\S+)\s*(?:±|\+-|\+/-)\s*(?P<tol>\S+))\s*"
)


@dataclass(frozen=True)
class Expectation:
    """The claim on the reduced number: ``< 0.5``, ``>= 0.9`` or ``1.28 ± 0.1`` (within,
    bounds included; ``+-`` may stand for ±)."""

    text: str
    op: str  # <, <=, >, >= or ±
    number: float
    tolerance: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Expectation:
        m = EXPECTATION.fullmatch(text)
        numbers = []
        for part in (m.group("bound"), m.group("centre"), m.group("tol")) if m else ():
            if part is not None:
                try:
                    numbers.append(float(part))
                except ValueError:
                    numbers = []
                    break
        if not m or not numbers or not all(map(math.isfinite, numbers)):
            raise ValueError(
                f"{text!r} is not a comparison: write < <= > >= and a number (e.g. '< 0.5'), "
                "or a number ± a tolerance (e.g. '1.28 ± 0.1')"
            )
        if m.group("op"):
            return cls(text.strip(), m.group("op"), numbers[0])
        if numbers[1] < 0:
            raise ValueError(f"{text!r}: the tolerance must be ≥ 0")
        return cls(text.strip(), "±", numbers[0], numbers[1])

    def holds(self, x: float) -> bool:
        """Does the measured ``x`` meet the claim? Never for nan."""
        if self.op == "±":
            return abs(x - self.number) <= self.tolerance
        return {
            "<": x < self.number,
            "<=": x <= self.number,
            ">": x > self.number,
            ">=": x >= self.number,
        }[self.op]


# ---------------------------------------------------------------------- the sections
def _parsed(parse: Callable[[str], Any], kind: str, value: Any) -> Any:
    """Run ``parse`` on a field's string, its ValueError as one pydantic error."""
    if not isinstance(value, str):
        raise PydanticCustomError(kind, "expected a string, got {got}", {"got": repr(value)})
    try:
        parse(value)
    except ValueError as e:
        raise PydanticCustomError(kind, "{why}", {"why": str(e)}) from None
    return value


Scalar = bool | int | float | str | None


class Reproduces(Options):
    """The published claim an experiment file reproduces (the header of its table)."""

    claim: str = Field(min_length=1, max_length=1000)
    """The claim, in one sentence."""
    source: str = Field(min_length=1, max_length=1000)
    """Where it was published: authors, year, section or figure."""
    runtime: str = Field("", max_length=200)
    """The expected runtime, e.g. 'about 4 min on a 2-core CPU'."""


class Check(Options):
    """One claimed number, checked on the stored metrics of the experiment's runs."""

    check: str = Field(min_length=1, max_length=200)
    """A short label, unique in the file."""
    runs: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    """Which runs: those whose params equal these (a list: any of them); omitted: all runs."""
    value: str
    """The expression evaluated per run (see the module doc)."""
    reduce: Reducer = "median"
    """Over the selected runs: max, min, median, mean (a nan anywhere gives nan), fraction
    (the share of runs whose value is true: non-zero and not nan), or crossing (the x where
    the median value per x crosses zero, linearly interpolated; needs ``x``)."""
    x: str | None = None
    """For reduce: crossing, the expression giving each run's x."""
    expect: str
    """The claim on the reduced number: '< 0.5', '>= 0.9', '1.28 ± 0.1'."""
    source: str = Field("", max_length=1000)
    """Why this threshold: the figure or sentence of the source; empty: the claim's source."""
    known: str | None = Field(None, min_length=1, max_length=1000)
    """A documented non-reproduction: the reason shown beside ✗ (known); it does not fail
    ``rnnlab reproduce``."""

    @field_validator("value", "x", mode="before")
    @classmethod
    def _expression(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)  # a constant is an expression too
        return _parsed(Expression.parse, "expression", v)

    @field_validator("expect", mode="before")
    @classmethod
    def _expect(cls, v: Any) -> Any:
        return _parsed(Expectation.parse, "expectation", v)

    @model_validator(mode="after")
    def _crossing_has_x(self) -> Check:
        if (self.reduce == "crossing") != (self.x is not None):
            raise PydanticCustomError(
                "crossing_x",
                "x: reduce: crossing needs x (the expression of each run's x), and only it "
                "takes one",
            )
        return self

    @property
    def expression(self) -> Expression:
        return Expression.parse(self.value)

    @property
    def x_expression(self) -> Expression | None:
        return Expression.parse(self.x) if self.x is not None else None

    @property
    def expectation(self) -> Expectation:
        return Expectation.parse(self.expect)


OWN_MESSAGES = ("expression", "expectation", "crossing_x")
"""These errors' messages say what was wrong; no '(got …)' is appended."""


def check_problems(
    checks: list[Check], params: dict[str, set[type]], cells: set[str] = frozenset({"elman"})
) -> list[tuple[tuple, str]]:
    """What the grid shows wrong with valid-looking checks, as (location in the file,
    message): a placeholder that names neither a metric (``names.run_metrics``) nor a
    numeric param of the grid (``params``: dotted key → the types of its values), a metric
    no run of the grid logs (none of its ``cells`` does: ``rnnlab.model.cells.logged_by``), a ``runs:``
    key that is not a param, a label used twice (labels name the table's rows)."""
    metrics = set(names.run_metrics())
    out, labels = [], set()
    for i, c in enumerate(checks):
        if c.check in labels:
            out.append((("expect", i, "check"), f"check {c.check!r} appears twice"))
        labels.add(c.check)
        for key in c.runs:
            if key not in params:
                why = f"not a param of the grid{_guess(key, params)}"
                out.append((("expect", i, "runs", key), why))
        for field, expr in (("value", c.expression), ("x", c.x_expression)):
            for term in expr.terms if expr else ():
                why = _term_problem(term, metrics, params) or _not_logged(term, cells)
                if why:
                    out.append((("expect", i, field), f"{term.text}: {why}"))
    return out


def _not_logged(term: Term, cells: set[str]) -> str | None:
    logged = logged_by(term.name)
    if term.name not in names.run_metrics() or cells & set(logged):
        return None
    return (
        f"logged only for model.cell {'|'.join(logged)}; this grid has {', '.join(sorted(cells))}"
    )


def _term_problem(term: Term, metrics: set[str], params: dict[str, set[type]]) -> str | None:
    name = term.name
    if name in metrics:
        return None
    if name in params:
        if term.step is not None:
            return "a param has no steps (@ is for metrics)"
        if not params[name] <= {int, float, bool, type(None)}:
            return "not a number (only numeric params can be used in an expression)"
        return None
    if name.startswith("grad/"):
        return f"unknown parameter; grad/<parameter> for one of: {', '.join(dict.fromkeys(names.PARAMETERS + names.GATED_PARAMETERS))}"
    return f"neither a metric nor a param of the grid{_guess(name, [*metrics, *params])}"


def _guess(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
