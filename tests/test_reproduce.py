"""Reproductions: the ``expect:`` format (parsing, safe evaluation, validation through the
CLI), the checks against hand-made frames whose answers are computed here by hand, and
``rnnlab reproduce`` end to end: a tiny claim swept, checked, resumed, failed and reported."""

import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, write
from conftest import cli as _cli

from rnnlab.config import Experiment, load_experiment
from rnnlab.config.expect import Expectation, Expression
from rnnlab.measure import names
from rnnlab.report import checks
from rnnlab.report.load import Frames

RATIO = names.EVAL_LOSS_RATIO


def cli(*args, cwd=None):
    """`python -m rnnlab` from this tree, whichever rnnlab the venv has installed."""
    return _cli(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT)})


# ------------------------------------------------------------------- expressions
def test_expressions_evaluate_like_python_with_ieee_edges():
    e = Expression.parse("abs({a}) + sqrt(4) * 2 ** 2 - max(1, {b}, 3) / min(4, 5) + exp(0)")
    assert [t.text for t in e.terms] == ["{a}", "{b}"]
    a, b = np.array([-1.5, 2.0]), np.array([0.0, 7.0])
    expected = [
        abs(x) + math.sqrt(4) * 2**2 - max(1, y, 3) / min(4, 5) + 1
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(e.evaluate([a, b]), expected, rtol=1e-15)
    # IEEE: no exception for a diverged run's numbers; a comparison with nan is false
    assert Expression.parse("1 / {x}").evaluate([0.0]) == np.inf
    assert Expression.parse("log({x})").evaluate([0.0]) == -np.inf
    assert np.isnan(Expression.parse("sqrt({x})").evaluate([-1.0]))
    assert Expression.parse("exp({x})").evaluate([1e4]) == np.inf
    assert Expression.parse("{x} < 1").evaluate([np.nan]) == 0.0
    assert Expression.parse("not {x} < 1").evaluate([np.nan]) == 1.0
    both = Expression.parse("{x} > 0 and {x} < 2 or {x} == 5")
    np.testing.assert_array_equal(both.evaluate([np.array([1, 3, 5, np.nan])]), [1, 0, 1, 0])
    assert Expression.parse("0 < {x} <= 1").evaluate([1.0]) == 1.0  # chained, as Python
    assert Expression.parse("{m@0} - {m}").terms[0].step == 0
    assert Expression.parse("(" * 100 + "2" + ")" * 100).evaluate([]) == 2  # parens add no depth


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "{x}.real",
        "{x}[0]",
        "1 if {x} else 2",
        "lambda: 1",
        "'text'",
        "True",
        "1 // 2",
        "1 % 2",
        "pi",
        "log(1, 2)",
        "min(1)",
        "open('f')",
        "log(x=1)",
        "{x",
        "{x@last}",
        "{}",
        "{x} +",
        "1, 2",
        "log + 1",
        "_0 + {x}",
        "log.__class__",
        "(" * 300 + "1" + ")" * 300,
        "-" * 500 + "1",
        "9" * 400,
    ],
)
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError):
        Expression.parse(text)


def test_expectations():
    assert Expectation.parse("< 0.5").holds(0.49) and not Expectation.parse("< 0.5").holds(0.5)
    assert Expectation.parse("<= 0.5").holds(0.5) and Expectation.parse(">=1e-3").holds(1e-3)
    assert not Expectation.parse("> 0").holds(np.nan) and not Expectation.parse("< 0").holds(np.nan)
    within = Expectation.parse("1.28 ± 0.1")
    assert within.holds(1.181) and within.holds(1.379) and not within.holds(1.3801)
    edges = Expectation.parse("1.5 ± 0.25")  # bounds included
    assert edges.holds(1.25) and edges.holds(1.75) and not edges.holds(np.nextafter(1.75, 2))
    assert Expectation.parse("1 +- 0.5").holds(0.5) and not within.holds(np.inf)
    for bad in ("~ 3", "< abc", "1 ± -1", "< inf", "0.5", "== 1", ""):
        with pytest.raises(ValueError):
            Expectation.parse(bad)


# ------------------------------------------------------------------- checks on frames
MAX = sys.float_info.max  # SQLite's stand-in for +inf


def frames() -> Frames:
    """Six runs: tanh and relu at gains 0.5, 1, 2; relu at gain 2 diverged (loss ratio +inf)."""
    runs = pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d", "e", "f"],
            "name": list("abcdef"),
            "status": ["finished"] * 5 + ["diverged"],
            "model.activation": ["tanh"] * 3 + ["relu"] * 3,
            "model.gain": [0.5, 1.0, 2.0] * 2,
            "train.clip_norm": [None] * 6,
            "seed": [0] * 6,
        }
    )
    first = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 1.0, "f": 1.0}
    last = {"a": 0.2, "b": 0.4, "c": 0.9, "d": 0.5, "e": 0.3, "f": MAX}
    lyap = {"a": -0.4, "b": -0.2, "c": 0.3, "d": -0.2, "e": 0.2, "f": 0.5}
    history = [(r, RATIO, 0, first[r]) for r in first]
    history += [(r, RATIO, 5, 0.7) for r in first]
    history += [(r, RATIO, 10, last[r]) for r in last]
    history += [(r, names.LYAPUNOV_MAX, 0, lyap[r]) for r in lyap]
    return Frames(
        "hand",
        runs,
        pd.DataFrame(history, columns=["run_id", "key", "step", "value"]),
        pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t"]),
        ["model.activation", "model.gain"],
    )


def outcome(f: Frames, **check) -> checks.Outcome:
    check = {"check": "c", "expect": "> -1e9"} | check
    experiment = Experiment.model_validate(
        {"name": "hand", "reproduces": {"claim": "C", "source": "S"}, "expect": [check]}
    )
    [o] = checks.evaluate(experiment, f)
    return o


@pytest.mark.parametrize(
    ("reduce", "expected"),
    [("max", 0.9), ("min", 0.2), ("median", (0.3 + 0.4) / 2), ("mean", 1.8 / 4)],
)
def test_each_reducer_over_the_selected_runs(reduce, expected):
    f = frames()
    f.runs = f.runs[f.runs.run_id.isin(["a", "b", "c", "e"])]  # values 0.2, 0.4, 0.9, 0.3
    o = outcome(f, value=f"{{{RATIO}}}", reduce=reduce)
    assert o.value == pytest.approx(expected, rel=1e-15) and o.ok and o.mark == "✓"
    assert o.claim == "C" and o.source == "S" and o.measured == f"{expected:.4g}"


def test_first_value_against_last_and_params_in_expressions():
    f = frames()
    o = outcome(f, value=f"{{{RATIO}}} / {{{RATIO}@0}}", reduce="max", runs={"model.gain": 1})
    assert o.value == pytest.approx(max(0.4 / 1.0, 0.3 / 1.0))
    o = outcome(f, value=f"{{{RATIO}@5}} * {{model.gain}}", reduce="max", expect="1.4 ± 1e-12")
    assert o.value == pytest.approx(0.7 * 2.0) and o.ok
    o = outcome(f, value="{train.clip_norm}", reduce="max")  # null → nan: never passes
    assert math.isnan(o.value) and not o.ok and o.measured == "nan"
    o = outcome(f, value=f"{{{RATIO}@3}}", reduce="min")  # no value logged at step 3
    assert math.isnan(o.value) and not o.ok


def test_runs_select_a_null_param_however_the_frame_holds_it():
    """``runs: {train.clip_norm: null}`` picks the unclipped runs whether the column holds
    None or, as a float column read from MLflow does, NaN (the Pascanu reproduction)."""
    f = frames()
    f.runs["train.clip_norm"] = [np.nan, np.nan, np.nan, 1.0, 1.0, 1.0]
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max", runs={"train.clip_norm": None})
    assert o.value == pytest.approx(0.9) and o.reason == ""  # a, b, c: 0.2, 0.4, 0.9
    o = outcome(f, value=f"{{{RATIO}}}", reduce="min", runs={"train.clip_norm": 1.0})
    assert o.value == pytest.approx(0.3)  # d, e, f: 0.5, 0.3, inf


def test_a_diverged_runs_infinite_loss_counts():
    f = frames()
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max", expect="< 1", runs={"model.gain": 2.0})
    assert o.value == np.inf and o.measured == "inf" and not o.ok and o.mark == "✗"
    o = outcome(f, value=f"{{{RATIO}}} > 0.85", reduce="fraction", expect="1 ± 0")
    assert o.value == pytest.approx(2 / 6) and not o.ok  # c (0.9) and f (inf)
    assert o.measured == f"{2 / 6:.4g} (2 of 6 runs)"
    o = outcome(f, value=f"{{{RATIO}}} < 0.35", reduce="fraction", expect="> 0.3")
    assert o.value == pytest.approx(2 / 6) and o.ok  # a (0.2) and e (0.3)
    f.history.loc[f.history.run_id == "b", "value"] = np.nan
    o = outcome(f, value=f"{{{RATIO}}}", reduce="median", runs={"model.activation": "tanh"})
    assert math.isnan(o.value) and not o.ok  # a nan anywhere: the claim cannot hold
    o = outcome(f, value=f"{{{RATIO}}}", reduce="fraction", runs={"model.activation": "tanh"})
    assert o.value == pytest.approx(2 / 3)  # nan is false


def test_a_value_means_the_last_logged_one_even_when_it_is_nan():
    """{m} is the value at the run's last logged step: a run that logged NaN there (it
    diverged) has NaN, never an earlier, finite value of it (which pandas' last() would have
    given, skipping NaN, so a claim passed on a value that was not there)."""
    f = frames()
    b = f.history[(f.history.run_id == "b") & (f.history.key == RATIO)]
    assert len(b) > 1 and np.isfinite(b.value).all()
    f.history.loc[b.step.idxmax(), "value"] = np.nan  # b's last value only
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max", runs={"model.activation": "tanh"})
    assert math.isnan(o.value) and not o.ok
    o = outcome(f, value=f"{{{RATIO}@0}}", reduce="max", runs={"model.activation": "tanh"})
    assert np.isfinite(o.value)  # its first value is still there


def test_crossing_interpolates_the_median_per_x_linearly():
    f = frames()
    # median λ per gain: 0.5 → (−0.4, −0.2) −0.3; 1 → (−0.2, 0.2) 0; 2 → (0.3, 0.5) 0.4
    o = outcome(f, value=f"{{{names.LYAPUNOV_MAX}}}", x="{model.gain}", reduce="crossing")
    assert o.value == pytest.approx(1.0)
    o = outcome(f, value=f"{{{names.LYAPUNOV_MAX}}} - 0.1", x="{model.gain}", reduce="crossing")
    # −0.4 at 0.5, −0.1 at 1, 0.3 at 2: zero at 1 + (2 − 1)·0.1/0.4
    assert o.value == pytest.approx(1.25, rel=1e-14)
    o = outcome(f, value=f"{{{names.LYAPUNOV_MAX}}} + 1", x="{model.gain}", reduce="crossing")
    assert math.isnan(o.value) and not o.ok and "no crossing" in o.reason


def test_which_runs_and_what_is_not_measured():
    f = frames()
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max", runs={"model.activation": "elu"})
    assert not o.ok and o.reason == "no runs" and o.failed and o.mark == "✗"
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max", runs={"model.activation": ["relu"]})
    assert o.value == np.inf
    o = outcome(f, value="1", known="does not reproduce at this budget", expect="< 0")
    assert not o.ok and not o.failed and o.mark == "✗ (known)"
    assert checks.rows([o])[0][-1] == "✗ (known): does not reproduce at this budget"
    f.runs.loc[f.runs.run_id == "a", "status"] = "failed"
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max", runs={"model.activation": "tanh"})
    assert not o.ok and o.reason == "1 failed of 3 runs"
    f = frames()
    f.missing = ["adding-T5-tanh-orthogonal4-s0"]
    o = outcome(f, value=f"{{{RATIO}}}", reduce="max")
    assert not o.ok and "1 grid points have no run" in o.reason


def test_metrics_named_are_what_the_history_must_hold():
    experiment = Experiment.model_validate(
        {
            "expect": [
                {"check": "a", "value": f"{{{RATIO}@0}} + {{model.gain}}", "expect": "< 1"},
                {"check": "b", "value": "{grad/weight_hh}", "x": "{seed}", "reduce": "crossing",
                 "expect": "< 1"},
            ]
        }
    )  # fmt: skip
    assert checks.metrics_named(experiment.expect) == [RATIO, "grad/weight_hh"]


def test_parameter_names_are_the_models():
    from rnnlab.model.elman import Elman

    assert tuple(n for n, _ in Elman(1, 2, 1).named_parameters()) == names.PARAMETERS


# ------------------------------------------------------------------- validation
HEAD = """\
name: tiny-claim
reproduces: {claim: "A tanh RNN of 4 units runs", source: "this test", runtime: "seconds"}
task: {name: adding, seq_len: 5}
model: {hidden_size: 4}
train: {steps: 3, batch_size: 4, eval_size: 8}
probe: {every: 1}
sweep: {model.gain: [0.5, 2.0]}
expect:
"""
"""Line 9 on is the expect list."""

BAD_EXPECT = {
    "unknown comparison": (
        '  - {check: a, value: "{eval/loss}", expect: "~ 1"}',
        "expect.0.expect",
    ),
    "unknown reducer": (
        '  - {check: a, value: "{eval/loss}", reduce: average, expect: "< 1"}',
        "expected one of: max, min, median, mean, fraction, crossing",
    ),
    "syntax error": ('  - {check: a, value: "{eval/loss} +", expect: "< 1"}', "syntax error"),
    "not allowed": (
        '  - {check: a, value: "__import__(\'os\')", expect: "< 1"}',
        "expect.0.value",
    ),
    "unknown metric": (
        '  - {check: a, value: "{eval/los}", expect: "< 1"}',
        "did you mean 'eval/loss'",
    ),
    "unknown grad parameter": ('  - {check: a, value: "{grad/W_hh}", expect: "< 1"}', "weight_hh"),
    "string param": (
        '  - {check: a, value: "{model.activation}", expect: "< 1"}',
        "not a number",
    ),
    "unknown runs key": (
        '  - {check: a, runs: {model.gian: 2.0}, value: "1", expect: "< 1"}',
        "expect.0.runs.model.gian: not a param of the grid (did you mean 'model.gain'?)",
    ),
    "missing value": ('  - {check: a, expect: "< 1"}', "expect.0.value: field required"),
    "unknown key": (
        '  - {check: a, value: "1", expect: "< 1", treshold: 1}',
        "expect.0.treshold: unknown key",
    ),
    "crossing without x": (
        '  - {check: a, value: "1", reduce: crossing, expect: "< 1"}',
        "reduce: crossing needs x",
    ),
    "duplicate label": (
        '  - {check: a, value: "1", expect: "< 1"}\n  - {check: a, value: "2", expect: "< 1"}',
        "'a' appears twice",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPECT))
def test_a_bad_check_is_one_line_naming_file_line_and_key_and_writes_nothing(tmp_path, case):
    entry, fragment = BAD_EXPECT[case]
    path = write(tmp_path / "bad.yaml", HEAD + entry + "\n")
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.match(rf"error: {re.escape(str(path))}:(9|10): expect\.", lines[0]), lines[0]
    assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_bad_claim_header(tmp_path):
    path = write(tmp_path / "bad.yaml", HEAD.replace('claim: "A tanh RNN of 4 units runs", ', ""))
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2 and "bad.yaml:2: reproduces.claim: field required" in proc.stderr


def test_checks_change_no_run_key(tmp_path):
    header = HEAD.splitlines(keepends=True)[1]
    plain = write(tmp_path / "plain.yaml", HEAD.replace(header, "").replace("expect:\n", ""))
    claimed = write(tmp_path / "claimed.yaml", HEAD + '  - {check: a, value: "1", expect: "< 2"}\n')
    keys = [[r.run_key for r in load_experiment(p)[1]] for p in (plain, claimed)]
    assert keys[0] == keys[1] and len(keys[0]) == 2


# ------------------------------------------------------------------- end to end
CHECKS = """\
  - check: every run ends finite
    value: "{eval/loss_ratio} < 1e6"
    reduce: fraction
    expect: ">= 1"
  - check: gradient at init
    runs: {model.gain: 2.0}
    value: "{grad/weight_hh@0}"
    reduce: min
    expect: "> 0"
    source: "the chain rule"
  - check: edge of chaos
    value: "{theory/slope}"
    x: "{model.gain}"
    reduce: crossing
    expect: "1.25 ± 0.75"
  - check: learns nothing in 3 steps
    value: "{eval/loss_ratio}"
    reduce: max
    expect: "< 0.01"
    known: "3 steps of 4 sequences teach nothing"
"""

FAILING = '  - check: impossible\n    value: "{eval/loss_ratio}"\n    expect: "< 0"\n'


@pytest.mark.slow
def test_reproduce_sweeps_checks_resumes_fails_and_reports(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write(tmp_path / "claim.yaml", HEAD + CHECKS)
    args = ("--tracking-uri", store, "--out", tmp_path / "figures", "--workers", "1")
    first = cli("reproduce", path, *args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 finished, 0 diverged, 0 failed of 2 trained" in first.stdout
    table = first.stdout[first.stdout.index("claim: A tanh RNN") :]
    rows = [r.split("  ")[0] for r in table.splitlines()[2:6]]
    assert rows == [
        "every run ends finite",
        "gradient at init",
        "edge of chaos",
        "learns nothing in 3 steps",
    ]
    assert re.search(r"every run ends finite +this test +>= 1 +1 \(2 of 2 runs\) +✓", table)
    assert re.search(r"gradient at init +the chain rule +> 0 +[0-9.e-]+ +✓", table)
    assert "✗ (known): 3 steps of 4 sequences teach nothing" in table
    summary = "1 claim(s), 4 check(s): 3 passed, 0 failed, 1 known not to reproduce"
    assert summary in first.stdout

    again = cli("reproduce", path, *args, cwd=tmp_path)  # resume: nothing trained, same table
    assert again.returncode == 0, again.stderr
    assert "nothing to do — all 2 grid point(s) already have a finished" in again.stdout
    assert again.stdout[again.stdout.index("claim: A tanh RNN") :] == table

    report = (tmp_path / "figures" / "tiny-claim" / "report.md").read_text()
    assert "## Reproduction checks" in report and "**Claim:** A tanh RNN of 4 units runs" in report
    assert "| every run ends finite | this test | >= 1 | 1 (2 of 2 runs) | ✓ |" in report

    failing = write(tmp_path / "failing.yaml", HEAD + CHECKS + FAILING)
    proc = cli("reproduce", failing, *args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nothing to do" in proc.stdout and re.search(
        r"impossible +this test +< 0 .* ✗$", proc.stdout, re.M
    )
    assert "5 check(s): 3 passed, 1 failed, 1 known not to reproduce" in proc.stdout

    from mlflow import MlflowClient  # every metric a run logs is one a check may name

    client = MlflowClient(store)
    [exp] = [e for e in client.search_experiments() if e.name == "tiny-claim"]
    logged = {k for r in client.search_runs([exp.experiment_id]) for k in r.data.metrics}
    assert {k for k in logged if not k.startswith("sweep/")} <= set(names.run_metrics())


def test_reproduce_names_files_in_experiments_reproductions(tmp_path):
    folder = tmp_path / "experiments" / "reproductions"
    folder.mkdir(parents=True)
    write(folder / "b_claim.yaml", HEAD + '  - {check: a, value: "1", expect: "< 2"}\n')
    write(folder / "a_claim.yaml", HEAD.replace("expect:\n", ""))  # no checks: refused
    proc = cli("reproduce", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown reproduction 'nope'; available: a_claim, b_claim"
    proc = cli("reproduce", cwd=tmp_path)
    assert proc.returncode == 2 and "a_claim.yaml: no expect: section" in proc.stderr
    proc = cli("reproduce", "b_claim", "train.steps=many", cwd=tmp_path)
    assert proc.returncode == 2 and "train.steps" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiments"]  # nothing written
