"""rnnlab: a lab bench for gradient dynamics in vanilla recurrent networks.

Data flows one way: YAML (experiments/) → ``config`` → grid of runs → ``train`` (yields
measurements, ``probes``) → ``tracking`` (MLflow) → report. Importing this package is cheap:
torch, mlflow and seaborn are imported only by the modules that need them.
"""

__version__ = "0.1.0"
