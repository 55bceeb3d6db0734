"""Experiment configuration: the typed schema and the YAML that fills it.

- ``schema``: the typed sections (model, train, probe, resources; the task section is
  composed from ``rnnlab.tasks``), ``RunConfig`` and its ``run_key``.
- ``experiment``: experiment files → ``Experiment`` → grid of ``RunConfig``, with overrides
  and errors that name the file, the line and the allowed values.
- ``expect``: the ``reproduces:`` and ``expect:`` sections (a claim and its checks), and the
  safe expressions the checks are written in.
- ``safeyaml``: a YAML reader that refuses hostile input.

This package must stay free of torch/mlflow imports: ``rnnlab validate`` is instant.
"""

from rnnlab.config.expect import Check, Expectation, Expression, Reproduces
from rnnlab.config.experiment import (
    MAX_GRID,
    MAX_GRID_YES,
    SYNONYMS,
    ConfigError,
    Experiment,
    SweepAxes,
    grid_size,
    load_experiment,
    machine_memory,
)
from rnnlab.config.schema import (
    DEFAULT_TASK,
    MEMBER_KEYS,
    NUMERICS,
    TASK_CONFIGS,
    ActivationName,
    InitName,
    InputInitName,
    ModelConfig,
    OptimizerName,
    ProbeConfig,
    ResourcesConfig,
    RunConfig,
    TaskConfig,
    TaskName,
    TrainConfig,
    flatten,
    leaf_keys,
    run_name,
)

__all__ = [
    "DEFAULT_TASK",
    "MAX_GRID",
    "MAX_GRID_YES",
    "MEMBER_KEYS",
    "NUMERICS",
    "SYNONYMS",
    "TASK_CONFIGS",
    "ActivationName",
    "Check",
    "ConfigError",
    "Expectation",
    "Experiment",
    "Expression",
    "InitName",
    "InputInitName",
    "ModelConfig",
    "OptimizerName",
    "ProbeConfig",
    "Reproduces",
    "ResourcesConfig",
    "RunConfig",
    "SweepAxes",
    "TaskConfig",
    "TaskName",
    "TrainConfig",
    "flatten",
    "grid_size",
    "leaf_keys",
    "load_experiment",
    "machine_memory",
    "run_name",
]
