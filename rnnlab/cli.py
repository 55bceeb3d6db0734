"""Command line: ``rnnlab sweep | run | reproduce | report | theory | validate | ui``.

Exit status: 0 ok, 2 bad input (nothing written), 1 failure (some run failed; for
``reproduce``, also a check that does not hold), 130 interrupted.
Heavy libraries (torch, mlflow) are imported only by the commands that need them, so
``rnnlab --help`` and ``rnnlab validate`` answer instantly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from rnnlab import __version__, exit_quickly
from rnnlab.config import (
    MAX_GRID,
    MAX_GRID_YES,
    ConfigError,
    Experiment,
    RunConfig,
    load_experiment,
    run_name,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


_KILLED = "interrupted: runs in progress were closed as KILLED with their metrics so far.\n"
_RUNS_KILLED = _KILLED + "resume: run the same command again; finished runs are kept and skipped."
_RERUN_KILLED = _KILLED + (
    "--rerun: the points it finished have their new runs, the others keep their earlier ones; "
    "run it without --rerun to keep those, or with --rerun to train every point again."
)
INTERRUPTED = {
    "sweep": _RUNS_KILLED,
    "run": _RUNS_KILLED,
    "reproduce": _RUNS_KILLED,
    "report": "interrupted: the report was not finished (the figures drawn so far are in its "
    "folder, report.md is not rewritten); run the same command again to draw it.",
}
"""What Ctrl-C (or SIGTERM where a command turns it into one) leaves, by command: the line
printed before exiting with status 130."""


def entry() -> None:
    """The ``rnnlab`` command (``rnnlab.__main__``): ``main``, then exit with its status,
    quickly (``rnnlab.exit_quickly``)."""
    exit_quickly()
    try:
        status = main()
    except KeyboardInterrupt:  # before main's own handler: while parsing the arguments
        print("\ninterrupted.", file=sys.stderr)
        status = EXIT_INTERRUPTED
    _forget_interrupts()
    raise SystemExit(status)


def _forget_interrupts() -> None:
    """Clear CPython's record of an interrupt ``main`` has handled, so that ``python -m
    rnnlab`` exits with its status (130) rather than by SIGINT.

    CPython (3.11–3.13: ``run_eval_code_obj``, ``Py_RunMain``) marks a KeyboardInterrupt that
    ends code run from a string (``exec`` of a string: how namedtuple and dataclass methods
    are made during an import) as unhandled even when a caller catches it, and after a
    ``-m`` module's exit kills the process with SIGINT. A Ctrl-C a sweep's first seconds
    (imports) did that about one time in six. Each such run first clears the mark: run an
    empty one."""
    exec("", {})


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except ConfigError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        said = INTERRUPTED.get(args.command, "interrupted.")
        if getattr(args, "rerun", False) and said == _RUNS_KILLED:
            said = _RERUN_KILLED
        print("\n" + said, file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (… | head): nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return EXIT_FAILED  # as Python itself exits on EPIPE (its signal module's docs)
    except Exception as e:  # no traceback for the user; one for a bug report on request
        if type(e).__name__ in ("StoreBusy", "StoreError"):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get("RNNLAB_DEBUG"):
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"error: {type(e).__name__}: {detail[:500]} (internal error; RNNLAB_DEBUG=1 shows "
            "the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _int_in(lo: int, hi: int, what: str):
    """An argparse type: an integer in [lo, hi], refused in one line naming the range."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is not {what} ({lo}–{hi})")
        return n

    return parse


_port = _int_in(1, 65535, "a port")
_workers = _int_in(1, 1024, "a number of workers")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
    return value


def _folder(text: str) -> Path:
    """An output folder's path: not empty (which would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a folder, e.g. results/figures")
    return Path(text)


def _check_out(folder: Path, experiments: list[str] = ()) -> None:
    """Refuse (exit 2) an output folder that is a file, or below one, or that cannot be
    written, or whose subfolder for one of ``experiments`` is a file, before anything is
    drawn (or, for reproduce, trained); nothing is created here."""
    for name in experiments:
        if (folder / name).exists() and not (folder / name).is_dir():
            raise ConfigError([f"--out {folder}: {folder / name} is a file, not a folder"])
    if folder.exists() and not folder.is_dir():
        raise ConfigError([f"--out {folder}: not a folder (a file is there)"])
    existing = folder
    while not existing.exists():  # the folder, or the nearest part of its path that exists
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError([f"--out {folder}: {existing} is a file, not a folder"])
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise ConfigError([f"--out {folder}: cannot write in {existing} ({e.strerror})"]) from None


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported on one line (exit 2) instead of usage + error;
    ``intermixed`` parsers take their positionals anywhere among the options, so that
    ``rnnlab sweep FILE --workers 1 train.steps=50`` reads the override too."""

    intermixed = False
    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self.intermixed and not self._inside:
            self._inside = True  # parse_known_intermixed_args calls back into this method
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inside = False
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rnnlab", description="Measure how gradients flow back through vanilla RNNs.")
    p.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    from rnnlab.run.executors import choices  # one file each; their heavy imports wait for use

    executors = choices()

    def experiment_args(sp: argparse.ArgumentParser) -> None:
        sp.intermixed = True
        sp.add_argument("file", type=Path, help="experiment YAML, e.g. experiments/vanishing.yaml")
        sp.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="dotted overrides applied after the file, e.g. train.steps=50 task.seq_len=40",
        )
        sp.add_argument(
            "--yes",
            action="store_true",
            help=f"accept a grid of more than {MAX_GRID:,} points (at most {MAX_GRID_YES:,})",
        )

    def uri_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--tracking-uri",
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
            "else sqlite:///results/mlflow.db)",
        )

    s = sub.add_parser("sweep", help="train every grid point of an experiment and log it to MLflow")
    experiment_args(s)
    uri_arg(s)
    s.add_argument(
        "--dry-run", action="store_true", help="print the grid and run count; write nothing"
    )
    s.add_argument(
        "--executor",
        choices=sorted(executors),
        default="local",
        help="; ".join(f"{name}: {cls.help}" for name, cls in sorted(executors.items())),
    )
    s.add_argument(
        "--slurm-folder",
        type=Path,
        default=None,
        metavar="DIR",
        help="submitit's folder for job logs and the driver's message spool; on a cluster it "
        "must be on a filesystem the nodes share (default: results/slurm)",
    )
    s.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join, e.g. 10.0.0.5:6379 (default: start a local Ray instance)",
    )
    s.add_argument(
        "--rerun",
        action="store_true",
        help="train every grid point again, replacing finished runs (default: resume)",
    )
    s.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="local worker processes (default: min(CPUs, grid size)); with --executor slurm, "
        "the most jobs queued at once (default: all)",
    )
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("run", help="train the file's base config once (its sweep is ignored)")
    experiment_args(r)
    uri_arg(r)
    r.add_argument(
        "--rerun", action="store_true", help="train it again even if it already finished"
    )
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser(
        "report",
        help="figures, report.md and report.html of an experiment's grid, from the MLflow store",
        description="Draw the runs of a grid: an experiment file's current grid (overrides "
        "applied), else for each experiment in the store the file in experiments/ that names "
        "it, else its latest sweep's grid. Other runs in the experiment are listed, not drawn.",
    )
    rp.intermixed = True  # files and overrides anywhere among the options
    rp.add_argument(
        "targets",
        nargs="*",
        metavar="FILE|key=value",
        help="experiment files whose current grid to draw, and overrides applied to them "
        "(e.g. experiments/vanishing.yaml train.steps=50)",
    )
    rp.add_argument(
        "--experiment",
        action="append",
        metavar="NAME",
        help="experiment name (repeatable; default: every experiment in the store)",
    )
    rp.add_argument(
        "--all",
        action="store_true",
        dest="all_runs",
        help="draw every run in the experiment, not one grid",
    )
    rp.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE[,VALUE]",
        help="draw only runs whose param KEY is one of the values (repeatable: all must hold); "
        "alone it selects among every run, with a FILE it narrows the file's grid",
    )
    uri_arg(rp)
    rp.add_argument(
        "--out",
        type=_folder,
        default=Path("results/figures"),
        help="output folder; one subfolder per experiment (default: results/figures)",
    )
    rp.add_argument(
        "--ui-url",
        metavar="URL",
        help="where the MLflow UI serves this store, for report.md's images on the sweep run "
        "(default: the tracking server, else http://127.0.0.1:5000 as `make ui` serves it)",
    )
    rp.set_defaults(func=cmd_report)

    rd = sub.add_parser(
        "reproduce",
        help="sweep published claims (experiments/reproductions/), check their numbers",
        description="For each reproduction file: sweep its grid (resuming like rnnlab sweep), "
        "evaluate its expect: checks on the stored runs, write its report with the checks "
        "table; print the table. Exit 1 if a check fails (a documented known failure does not).",
    )
    rd.intermixed = True
    rd.add_argument(
        "targets",
        nargs="*",
        metavar="NAME|key=value",
        help=f"file stems in {REPRODUCTIONS}/ or paths (default: every file there), and "
        "overrides applied to each, e.g. train.steps=20",
    )
    uri_arg(rd)
    rd.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="local worker processes (default: min(CPUs, grid size))",
    )
    rd.add_argument(
        "--out",
        type=_folder,
        default=Path("results/figures"),
        help="report folder; one subfolder per experiment (default: results/figures)",
    )
    rd.set_defaults(func=cmd_reproduce)

    th = sub.add_parser("theory", help="mean-field prediction: q*, χ₁, gradient slope, depth scale")
    th.add_argument(
        "--activation", required=True, help="tanh, relu, sigmoid, linear, leaky_relu, hardtanh"
    )
    th.add_argument("--gain", type=_finite, required=True, help="σ_w: W_hh ~ N(0, gain²/H)")
    th.add_argument("--input-var", type=_finite, default=0.0, help="q_in: input variance per unit")
    th.add_argument("--bias-var", type=_finite, default=0.0, help="σ_b²: bias variance")
    th.add_argument("--json", action="store_true", help="print one JSON object")
    th.set_defaults(func=cmd_theory)

    v = sub.add_parser("validate", help="check an experiment file and print its grid size")
    experiment_args(v)
    v.set_defaults(func=cmd_validate)

    u = sub.add_parser("ui", help="serve the MLflow UI on the store (127.0.0.1)")
    uri_arg(u)
    u.add_argument("--port", type=_port, default=5000)
    u.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    u.set_defaults(func=cmd_ui)
    return p


def _load(args) -> tuple[Experiment, list[RunConfig]]:
    """The experiment and its grid, every check that needs no store done (exit 2 if not)."""
    experiment, grid = load_experiment(
        args.file, args.overrides, MAX_GRID_YES if args.yes else MAX_GRID
    )
    if any(r.train.device == "cuda" for r in grid):  # only then is torch worth importing
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                [
                    f"{args.file}: train.device=cuda, but this machine has no CUDA device "
                    "(use auto or cpu)"
                ]
            )
    _check_uri(args)
    return experiment, grid


def _check_uri(args) -> None:
    uri = getattr(args, "tracking_uri", None)
    if uri is not None and not uri.strip():
        raise ConfigError(["--tracking-uri: empty; leave it out for results/mlflow.db"])
    looks_like_a_path = "/" in uri or uri.endswith((".db", ".sqlite")) if uri else False
    if looks_like_a_path and ":" not in uri.split("/", 1)[0]:  # no scheme: a path, not a URI
        path = Path(uri).expanduser().resolve()
        raise ConfigError(
            [
                f"--tracking-uri {uri}: a path, not a URI; for an SQLite store there: sqlite:///{path}"
            ]
        )


def _check_environment() -> None:
    """rnnlab's tuning variables, read by the workers, checked before anything runs."""
    from rnnlab.measure.measurement import measure_threads

    problems = []
    try:
        measure_threads()
    except ValueError as e:
        problems.append(str(e))
    if os.environ.get("RNNLAB_TRITON_TILE", "").strip() and find_spec("triton"):
        from rnnlab.model.backends.triton_elman import tile_override  # only Triton reads it

        try:
            tile_override()
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(problems)


def _workers_for(args, grid: list[RunConfig]) -> int:
    """--workers (no more than the grid has points), else one per CPU up to the grid's size."""
    return min(args.workers or os.cpu_count() or 1, len(grid)) if len(grid) > 1 else 1


def cmd_validate(args) -> int:
    experiment, grid = _load(args)
    swept = experiment.swept_keys()
    axes = f" over {', '.join(swept)}" if swept else ""
    print(f"{args.file}: ok — experiment {experiment.name!r}, {len(grid)} run(s){axes}")
    _note_jacobian_cost(grid)
    return EXIT_OK


JACOBIAN_NOTE_SECONDS = 60
"""A run whose Jacobian spectrum takes longer than this (one core, both probes) gets a note."""


def _note_jacobian_cost(grid: list[RunConfig]) -> None:
    """A note on stderr where the Jacobian spectrum (float64, on the CPU, ~L·n·H³) would take
    a run minutes: without measurement threads (a CPU's default) the run shows no progress
    while it is measured."""
    worst = max(grid, key=lambda r: r.jacobian_seconds())
    probes = 2 if worst.train.steps > 0 else 1  # the first and the last probe
    seconds = probes * worst.jacobian_seconds()
    if seconds < JACOBIAN_NOTE_SECONDS:
        return
    took = f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
    print(
        f"note: the Jacobian spectrum (jac/*) takes about {took} of a CPU core per run at "
        f"model.hidden_size={worst.model.hidden_size}, task.seq_len={worst.task.seq_len} "
        f"along {worst.jacobian_inputs()} trajectories; probe.jacobian_trajectories=0 skips "
        "it, fewer cost less",
        file=sys.stderr,
    )


def cmd_sweep(args) -> int:
    experiment, grid = _load(args)
    if args.ray_address and args.executor != "ray":
        raise ConfigError(["--ray-address needs --executor ray"])
    if args.slurm_folder is not None and args.executor != "slurm":
        raise ConfigError(["--slurm-folder needs --executor slurm"])
    args.slurm_folder = args.slurm_folder or Path("results/slurm")
    if args.dry_run:
        swept = experiment.swept_keys()
        for run in grid:
            print(f"{run.run_key}  {run_name(run, swept)}")
        print(f"{len(grid)} run(s) in experiment {experiment.name!r}; nothing was run (--dry-run)")
        return EXIT_OK
    return _execute(experiment, grid, args, _workers_for(args, grid), parent=True)


def cmd_run(args) -> int:
    experiment, _ = _load(args)
    return _execute(experiment, [experiment.base()], args, workers=1, parent=False)


def _execute(
    experiment: Experiment, grid: list[RunConfig], args, workers: int, parent: bool
) -> int:
    from rnnlab.run.executors import choices
    from rnnlab.run.executors.base import started
    from rnnlab.run.sweep import run_sweep
    from rnnlab.track import default_tracking_uri

    _check_environment()
    uri = args.tracking_uri or default_tracking_uri()
    kind = getattr(args, "executor", "local")
    builder = choices()[kind]
    builder.check(args, uri)  # a missing package or an unreachable head: exit 2
    executor, where = builder.from_cli(args, experiment.resources, workers)
    # Local workers start now and import torch while this process imports MLflow and opens
    # the store; they are ended if nothing comes of it (a store refused, nothing to train).
    with started(executor, grid):
        from rnnlab.track import MlflowTracker

        tracker = MlflowTracker(uri)
        tracker.check()  # an unreachable or unwritable store is bad input: exit 2, nothing run
        tracker.check_experiment(experiment.name)
        print(f"{experiment.name}: {len(grid)} grid point(s), {where} → {uri}", file=sys.stderr)
        _note_jacobian_cost(grid)
        summary = run_sweep(
            experiment,
            grid,
            tracker,
            parent=parent,
            rerun=getattr(args, "rerun", False),
            executor=executor,
        )
    s = summary
    if s.dead_sweeps:
        print(f"{s.dead_sweeps} sweep(s) left RUNNING by a dead process were closed as KILLED")
    if s.stale:
        print(f"{s.stale} run(s) left RUNNING by a dead process were marked KILLED and redone")
    if s.busy:
        print(f"{s.busy} grid point(s) are RUNNING in another live process and were left to it")
    trained = s.finished + s.diverged + s.failed + s.killed
    if trained == 0:
        print(
            f"\n{experiment.name}: nothing to do — all {s.skipped} grid point(s) already have a "
            "finished or diverged run (use --rerun to train them again)"
        )
    else:
        overhead = 100 * s.tracking_seconds / max(s.seconds, 1e-9)
        resumed = f", {s.skipped} already done" if s.skipped else ""
        stacked = f"; {sum(s.stacks)} in {len(s.stacks)} ensembles" if s.stacks else ""
        print(
            f"\n{experiment.name}: {s.finished} finished, {s.diverged} diverged, {s.failed} failed "
            f"of {trained} trained{resumed} in {s.seconds:.1f} s "
            f"(tracking {s.tracking_seconds:.1f} s, {overhead:.0f}%{stacked})"
        )
    if s.finals:
        print(medians_table(grid, s.finals, experiment.swept_keys()))
    for line in s.failures:
        print(f"  failed: {line}")
    if s.failed:
        print("  tracebacks: each failed run's error.txt artifact; rerun the command to retry them")
    print(f"results: {tracker.uri} (experiment {experiment.name!r})")
    print(f"browse:  {_how_to_open(tracker.uri)} {tracker.runs_url()}")
    return EXIT_OK if s.ok else EXIT_FAILED


@contextlib.contextmanager
def _drawing(experiment: str, stream=None):
    """A report's progress callback: on a terminal, one line rewritten per figure ("vanishing:
    figure 3/15, learning curves"), cleared when the block ends, however it ends; elsewhere
    (logs, pipes) nothing: the summary after it says what was drawn. Ctrl-C stops the report
    at the next figure (or before its pages are written), as KeyboardInterrupt: raised at any
    moment it could land in matplotlib's clean-up callbacks, which swallow it (the report
    then went on and exited 0). A second Ctrl-C stops at once."""
    stream = stream or sys.stderr
    live = stream.isatty()
    asked = []

    def on_sigint(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    def progress(i: int, n: int, name: str) -> None:
        if asked:
            raise KeyboardInterrupt
        if live:  # within one row, or \r would leave the wrapped rows behind
            width = shutil.get_terminal_size().columns - 1
            what = f"figure {i + 1}/{n}, {name}" if i < n else f"writing {name}"
            stream.write(f"\r\033[K{experiment}: {what}"[: 4 + width])
            stream.flush()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield progress
    finally:
        signal.signal(signal.SIGINT, previous)
        if live:
            stream.write("\r\033[K")
            stream.flush()


def _how_to_open(uri: str) -> str:
    """How a user opens this store's UI: a server is open already; the default store has
    ``make ui``; another store needs its URI."""
    from rnnlab.track import default_tracking_uri

    if uri.startswith(("http://", "https://")):
        return "open"
    if uri == default_tracking_uri():
        return "make ui, then"
    return f"rnnlab ui --tracking-uri {uri}, then"


def medians_table(grid: list[RunConfig], finals: dict, swept: list[str], rows: int = 30) -> str:
    """The grid's outcome on one screen: per condition (every swept key but the seed), the
    median final eval/loss_ratio (min–max over seeds) and median gradient slope."""
    import statistics

    from rnnlab.measure.names import EVAL_LOSS_RATIO, SLOPE

    keys = [k for k in swept if k != "seed"] or ["task.name"]
    table: dict[tuple, list[dict]] = {}
    for i, final in finals.items():
        params = grid[i].params()
        table.setdefault(tuple(params.get(k) for k in keys), []).append(final)

    def cell(values: list[float], spread: bool) -> str:
        values = [v for v in values if v == v]  # nan: no fit
        if not values:
            return "–"
        mid = f"{statistics.median(values):.3g}"
        return f"{mid} ({min(values):.2g}–{max(values):.2g})" if spread and len(values) > 1 else mid

    header = [k.rsplit(".", 1)[-1] for k in keys] + ["runs", "loss ratio (range)", "slope/step"]
    lines = []
    from rnnlab.model.activations import activation_rank
    from rnnlab.model.cells import NAMES as CELLS

    def order(cond: tuple) -> list:  # numbers by value, activations and cells as the figures
        return [
            activation_rank(v)
            if k == "model.activation"
            else (str(CELLS.index(v)), v)
            if k == "model.cell" and v in CELLS
            else (str(type(v)), v)
            for k, v in zip(keys, cond, strict=True)
        ]

    for cond in sorted(table, key=order):
        finals_ = table[cond]
        ratio = [f[EVAL_LOSS_RATIO] for f in finals_ if EVAL_LOSS_RATIO in f]
        slope = [f[SLOPE] for f in finals_ if SLOPE in f]
        lines.append([*map(str, cond), str(len(finals_)), cell(ratio, True), cell(slope, False)])
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [
        "",
        "final medians over seeds (runs trained now; 1 = baseline loss):",
        fmt.format(*header).rstrip(),
    ]
    out += [fmt.format(*r).rstrip() for r in lines[:rows]]
    if len(lines) > rows:
        out.append(f"… {len(lines) - rows} more conditions: rnnlab report draws them all")
    return "\n".join(out)


REPRODUCTIONS = Path("experiments/reproductions")
"""Where ``rnnlab reproduce`` finds its claims, one YAML file each."""


def _reproductions(names: list[str]) -> list[Path]:
    """The files named (a stem in :data:`REPRODUCTIONS` or a path), else all of them."""
    available = sorted(REPRODUCTIONS.glob("*.y*ml"))
    listed = ", ".join(p.stem for p in available) or f"none (no YAML files in {REPRODUCTIONS}/)"
    if not names and not available:
        raise ConfigError([f"no reproductions: {REPRODUCTIONS}/ has no YAML files"])
    files = []
    for name in names:
        path = Path(name)
        stems = [p for p in available if p.stem == name or p.name == name]
        if stems:
            files.append(stems[0])
        elif path.suffix in (".yaml", ".yml") and path.is_file():
            files.append(path)
        else:
            raise ConfigError([f"unknown reproduction {name!r}; available: {listed}"])
    return files or available


def cmd_reproduce(args) -> int:
    from rnnlab.track import MlflowTracker

    names = [t for t in args.targets if "=" not in t]
    args.overrides = [t for t in args.targets if "=" in t]
    _check_uri(args)
    plans = []
    for path in _reproductions(names):  # every file checked before anything runs
        experiment, grid = load_experiment(path, args.overrides)
        if not experiment.expect:
            raise ConfigError([f"{path}: no expect: section; a reproduction checks its claim"])
        plans.append((path, experiment, grid))
    _check_out(args.out, [experiment.name for _, experiment, _ in plans])
    from rnnlab import report
    from rnnlab.report import checks

    uri = MlflowTracker(args.tracking_uri).uri
    status, tables = EXIT_OK, []
    for path, experiment, grid in plans:
        if _execute(experiment, grid, args, _workers_for(args, grid), parent=True) != EXIT_OK:
            status = EXIT_FAILED
        swept = experiment.swept_keys()
        frames = report.load_results(
            experiment.name,
            uri,
            grid={r.run_key: run_name(r, swept) for r in grid},
            source=f"the current grid of {path}",
            metrics=checks.metrics_named(experiment.expect),
        )
        outcomes = checks.evaluate(experiment, frames)
        out = args.out / experiment.name
        with _drawing(experiment.name) as progress:
            report.report(frames, out, outcomes, experiment.reproduces, progress)
        report.log_to_parent(uri, frames, out)
        tables.append((path, experiment, outcomes, out / "report.md"))
    counts = {"passed": 0, "failed": 0, "known": 0}
    for path, experiment, outcomes, md in tables:
        claim = experiment.reproduces
        print(f"\n{path.stem}: {claim.claim} ({claim.source})" if claim else f"\n{path.stem}")
        print(checks.text_table(outcomes))
        print(f"  report: {md}")
        for o in outcomes:
            counts["passed" if o.ok else "known" if o.known else "failed"] += 1
    n = sum(counts.values())
    print(
        f"\n{len(tables)} claim(s), {n} check(s): {counts['passed']} passed, "
        f"{counts['failed']} failed, {counts['known']} known not to reproduce"
    )
    return EXIT_FAILED if counts["failed"] else status


def cmd_report(args) -> int:
    from rnnlab.track import MlflowTracker

    _check_uri(args)
    files = [Path(t) for t in args.targets if "=" not in t]
    overrides = [t for t in args.targets if "=" in t]
    if overrides and not files:
        raise ConfigError(
            [
                f"overrides ({' '.join(overrides)}) need an experiment file, e.g. "
                f"rnnlab report experiments/vanishing.yaml {' '.join(overrides)}"
            ]
        )
    if files and args.experiment:
        raise ConfigError(["--experiment: an experiment file already names its experiment"])
    plans = [_file_grid(path, overrides) for path in files]  # bad files fail before any work
    tracker = MlflowTracker(args.tracking_uri)
    tracker.check(create=False)  # a report never creates a store
    from rnnlab import report

    if not files:
        names = args.experiment or report.experiments(tracker.uri)
        declared = {} if args.all_runs or args.where else _experiment_files()
        plans = [declared.get(name) or (name, None, None, None) for name in names]
    from rnnlab.report import checks

    frames = [  # every bad name or filter fails before anything is drawn
        report.load_results(
            name,
            tracker.uri,
            grid=None if args.all_runs else grid,
            where=args.where,
            all_runs=args.all_runs,
            source=source,
            metrics=checks.metrics_named(experiment.expect) if experiment else (),
        )
        for name, grid, source, experiment in plans
    ]
    _check_out(args.out, [f.experiment for f in frames])
    for f, (*_, experiment) in zip(frames, plans, strict=True):
        out = args.out / f.experiment
        t0 = time.perf_counter()
        outcomes = checks.evaluate(experiment, f) if experiment and experiment.expect else []
        claim = experiment.reproduces if experiment else None
        with _drawing(f.experiment) as progress:
            path = report.report(f, out, outcomes, claim, progress)
        logged = report.log_to_parent(tracker.uri, f, out, args.ui_url)
        n = len(list(out.glob("*.png")))
        print(f"{f.experiment}: drew {f.selection} ({len(f.drawn)} runs)")
        if f.drawn.empty:
            print(
                "  nothing to draw: sweep the grid first (make sweep EXP=…), or draw the runs "
                "there are with --all"
            )
        if len(f.others):
            print(
                f"  {len(f.others)} other run(s) in the experiment are listed in the report, "
                "not drawn (--all draws every run, --where KEY=VALUE selects)"
            )
        where = " and on the sweep's parent run" if logged else ""
        print(f"  {n} figures (PNG + PDF) in {out}{where} ({time.perf_counter() - t0:.1f} s)")
        print(f"  report: {path} and {path.with_suffix('.html')}")
        if logged:
            base = args.ui_url or report.ui_base(tracker.uri)
            how = _how_to_open(tracker.uri)
            print(
                f"  in the UI: {how} {base}/#/experiments/{f.experiment_id}/runs/"
                f"{f.parent_run_id}/artifacts/report/report.html"
            )
    return EXIT_OK


Plan = tuple[str, dict[str, str], str, Experiment]


def _file_grid(path: Path, overrides: list[str]) -> Plan:
    """(experiment name, run_key → run name of the file's current grid, how it was chosen,
    the experiment)."""
    experiment, grid = load_experiment(path, overrides)
    swept = experiment.swept_keys()
    source = f"the current grid of {path}" + (
        f" with overrides {' '.join(overrides)}" if overrides else ""
    )
    return experiment.name, {r.run_key: run_name(r, swept) for r in grid}, source, experiment


def _experiment_files() -> dict[str, Plan]:
    """Experiment name → its file's current grid, for every valid experiments/*.yaml and
    experiments/reproductions/*.yaml here."""
    out: dict[str, Plan] = {}
    paths = [*sorted(Path("experiments").glob("*.y*ml")), *sorted(REPRODUCTIONS.glob("*.y*ml"))]
    for path in paths:
        try:
            plan = _file_grid(path, [])
        except ConfigError:
            continue
        out.setdefault(plan[0], plan)
    return out


def cmd_theory(args) -> int:
    import json
    import typing

    from rnnlab.config import ActivationName
    from rnnlab.measure import theory

    names = typing.get_args(ActivationName)
    if args.activation not in names:
        raise ConfigError([f"--activation: {args.activation!r} is not one of: {', '.join(names)}"])
    checks = (  # beyond these the fixed point itself overflows float64
        ("--gain", args.gain, 0 < args.gain <= 1e6, "in (0, 1e6]"),
        ("--input-var", args.input_var, 0 <= args.input_var <= 1e12, "in [0, 1e12]"),
        ("--bias-var", args.bias_var, 0 <= args.bias_var <= 1e12, "in [0, 1e12]"),
    )
    bad = [f"{flag}: must be {rule} (got {value})" for flag, value, ok, rule in checks if not ok]
    if bad:
        raise ConfigError(bad)
    import math

    mf = theory.mean_field(args.activation, args.gain, args.input_var, args.bias_var)
    if args.json:  # JSON has no Infinity: a non-finite value (χ₁ = 1 has no depth scale) is null
        values = {k: v if math.isfinite(v) else None for k, v in mf.as_dict().items()}
        print(json.dumps(values, allow_nan=False))
        return EXIT_OK
    crit = theory.critical_gain(args.activation, args.input_var, args.bias_var)
    regime = "exploding" if mf.chi1 > 1 else "vanishing" if mf.chi1 < 1 else "critical"
    print(
        f"{args.activation}, σ_w = {args.gain:g}, q_in = {args.input_var:g}, σ_b² = {args.bias_var:g}"
    )
    print(f"  q*          = {mf.q_star:.6g}   (fixed-point pre-activation variance)")
    print(f"  χ₁          = {mf.chi1:.6g}   (per-step factor on ‖∂L/∂h‖²)")
    print(f"  slope       = {mf.slope:.6g} nats/step   (½ ln χ₁: {regime})")
    print(f"  depth scale = {mf.depth_scale:.6g} steps   (ξ = −1/ln χ₁)")
    print(f"  edge of chaos at σ_w = {crit:.6g}")
    return EXIT_OK


def _port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now, or None (bound as uvicorn binds:
    address reuse on, so only a listening socket makes the port busy)."""
    import errno
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is in use (another server?); choose another with --port"
        return f"cannot listen on {host}:{port} ({e.strerror or e})"
    return None


def cmd_ui(args) -> int:
    from rnnlab.track import MlflowTracker, default_tracking_uri, sqlite_path

    uri = args.tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        print(f"error: no MLflow store at {db} yet; run `make sweep` first", file=sys.stderr)
        return EXIT_BAD_INPUT
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [
        mlflow,
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    from rnnlab.ui import decay_url

    if (problem := _port_problem(args.host, args.port)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base} (Ctrl-C to stop); for each experiment:")
    tracker = MlflowTracker(uri)
    for name, exp_id in tracker.experiments().items():
        # stores from older sweeps get the decay-curve view too; a read-only store cannot
        with contextlib.suppress(Exception):
            tracker.save_view(exp_id)
        # the runs table, not the GenAI overview a click on the experiment opens
        print(f"  {name}")
        print(f"    runs table:   {base}/#/experiments/{exp_id}/runs")
        print(f"    decay curves: {decay_url(base, exp_id)}")
    sys.stdout.flush()
    server = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the server too
    try:
        code = server.wait()  # it serves until Ctrl-C: ending on its own is a failure
        print(f"error: the MLflow server stopped (exit status {code})", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
