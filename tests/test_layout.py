"""The layout is the architecture: data flows one way, and no import runs back up the layers.

    tasks, model → config → measure → train → track, ui → report → run → cli

Every ``import`` in every module is read (those inside functions and under TYPE_CHECKING
too: a lazy import is still a dependency), so a shortcut up the layers fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rnnlab

PACKAGE = Path(rnnlab.__file__).parent

LAYERS = [
    {"rnnlab", "__version__", "options", "lazy_exports"},  # the package's own plumbing
    {"tasks", "model"},  # pure generators; the one model and its backends
    {"config"},  # the schema reads the task registry and the activation/init tables
    {"measure"},  # names, probes, theory, dynamics
    {"optim", "train"},  # the one training loop: yields measurements, never tracks them
    {"track", "ui"},  # the tracking boundary (MLflow) and the UI's saved view
    {"report"},  # tidy frames from the store → figures
    {"run"},  # the sweep: grid → executors → train → tracker
    {"cli", "__main__", "bench", "docs_figures"},  # entry points
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
LAYER["measure.names"] = 0  # every metric name, once: plain strings every layer may read


def _layer(module: str) -> int:
    parts = module.split(".")[1:3]
    return LAYER.get(".".join(parts), LAYER.get(_unit(module), -1))


def _unit(module: str) -> str:
    """rnnlab.model.elman → model; rnnlab → rnnlab."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnlab"):
            found |= {f"{node.module}.{a.name}" for a in node.names}  # a module or a name in it
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rnnlab")}
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((".".join(p for p in parts if p != "__init__"), path))
    return out


def test_every_module_belongs_to_a_layer():
    units = {_unit(m) for m, _ in _modules()}
    assert units <= set(LAYER), f"new top-level modules need a layer here: {units - set(LAYER)}"


def test_no_import_runs_back_up_the_layers():
    upward = []
    for module, path in _modules():
        here = _layer(module)
        for target in _imports(path):
            if _layer(target) > here:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_lazy_imports(tmp_path):
    """The reader must not miss an import inside a function (the way a shortcut hides)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from rnnlab.report.load import load\n    import rnnlab.cli\n")
    assert _imports(path) == {"rnnlab.report.load.load", "rnnlab.cli"}
