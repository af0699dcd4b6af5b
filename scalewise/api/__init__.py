"""The Python API: ``scalewise.load(...)`` -> :class:`Pipeline` (``.sample``, ``.restore``)."""

from scalewise.api.load import is_model_uri, load
from scalewise.api.pipeline import GUIDANCE_SETTINGS, Pipeline, RestoreRun

__all__ = ["GUIDANCE_SETTINGS", "Pipeline", "RestoreRun", "is_model_uri", "load"]
