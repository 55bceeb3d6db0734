"""Where the jobs of a sweep run: one file per executor (see ``base``), found here.

Every module of this package is read for classes that follow the ``Executor`` protocol
(a ``name`` and a ``run``); their modules import nothing heavy at the top (Ray, submitit and
torch load on use), so listing them is cheap. Those with a ``choice`` are
``rnnlab sweep --executor`` values, built from the command line by their ``from_cli``.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from rnnlab.run.executors.base import Executor


@functools.cache
def registry() -> dict[str, type]:
    """Executor name → class, for every executor module in this package."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if _is_executor(obj) and obj.__module__ == module.__name__:
                found[obj.name] = obj
    return found


def _is_executor(obj) -> bool:
    return (
        isinstance(obj, type)
        and isinstance(getattr(obj, "name", None), str)
        and callable(getattr(obj, "run", None))
    )


def choices() -> dict[str, type]:
    """``--executor`` value → the class whose ``from_cli`` builds it."""
    return {c.choice: c for c in registry().values() if hasattr(c, "choice")}


def make(name: str, **options) -> Executor:
    return registry()[name](**options)
