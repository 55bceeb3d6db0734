"""rnnlab: a lab bench for gradient dynamics in vanilla recurrent networks.

Data flows one way: YAML (experiments/) → ``config`` → grid of runs → ``train`` (yields
measurements, ``probes``) → ``tracking`` (MLflow) → report. Importing this package is cheap:
torch, mlflow and seaborn are imported only by the modules that need them.
"""

import os

__version__ = "0.1.0"

# MKL's matrix multiplies round differently depending on how their operands sit in memory,
# so a network's bits would depend on where it sits in a stack. Its strict conditional
# reproducibility mode removes that (at no measurable cost here); MKL reads the setting at
# its first call, so it is set before torch is imported. ``rnnlab.model.elman.check_reproducible``
# warns when it did not take effect (torch used before rnnlab was imported).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
