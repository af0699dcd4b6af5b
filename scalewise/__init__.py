"""scalewise: scale-wise visual autoregressive generation (VAR / SRDD) and inverse problems.

The package is a library: importing it has no I/O side effects. Three lines sample from a
trained model::

    import scalewise
    pipe = scalewise.load(model="models/srdd.pt", tokenizer="models/tokenizer.pt")
    images = pipe.sample([3], n=2)  # PIL images; pipe.restore(photo, task=...) restores at photo's size
 Stages (``stages/``) and
flows (``flows/``) read parameters, talk to MLflow / Prefect and write files.
"""

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__", "load"]


def __getattr__(name: str):
    """``scalewise.load`` / ``scalewise.Pipeline``, imported on first use (torch loads then, not at import)."""
    if name in ("load", "Pipeline"):
        from scalewise import api

        return getattr(api, name)
    raise AttributeError(f"module 'scalewise' has no attribute {name!r}")
