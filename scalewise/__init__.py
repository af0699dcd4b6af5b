"""scalewise: scale-wise visual autoregressive generation (VAR / SRDD) and inverse problems.

The package is a library: importing it has no I/O side effects. Stages (``stages/``) and
flows (``flows/``) read parameters, talk to MLflow / Prefect and write files.
"""

__version__ = "0.1.0"
