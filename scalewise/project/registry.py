"""Models in MLflow: each training run logs its sampler, and ``report`` registers and crowns them.

- :func:`log_sampler` (called by ``train@<model>`` and ``distill`` through
  :meth:`Tracker.log_model`): the transformer and its tokenizer, logged to the stage's run as
  one MLflow ``pyfunc`` model (:class:`SamplerModel`) named ``model``, with a signature and a
  two-row input example. The run is tagged with the transformer file's MD5, so that the
  ``report`` stage can find the run whose weights are the ones it evaluated.
- :func:`register_evaluated` (the ``report`` stage): registers ``scalewise-<model>`` from that
  run (once per weights), tags the version with its FID and the evaluation protocol, and moves
  the alias ``champion`` to the lowest-FID version evaluated under the same protocol.
- :func:`scalewise.api.download.download_sampler` reads such a model back for :func:`scalewise.load`.

Loading a logged model anywhere: ``mlflow.pyfunc.load_model("models:/scalewise-srdd@champion")``;
its ``predict`` takes a DataFrame with ``class_label`` (and optionally ``seed``) and returns
uint8 images (N, H, W, C).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MODEL_NAME = "model"  # the logged model's name inside each training run
ALIAS = "champion"
MD5_TAG = "scalewise.weights_md5"
URI_TAG = "scalewise.model_uri"
PROTOCOL_TAG = "scalewise.fid_protocol"


def registered_name(model: str) -> str:
    """The registry name of a model key: ``var`` -> ``scalewise-var``."""
    return f"scalewise-{model}"


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file's bytes (the weights' identity, as in dvc.lock)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


try:  # the class must exist whether or not mlflow imports cheaply; it subclasses PythonModel when it does
    from mlflow.pyfunc import PythonModel as _Base
except ImportError:  # pragma: no cover - mlflow is a dependency
    _Base = object


class SamplerModel(_Base):  # type: ignore[misc,valid-type]
    """MLflow pyfunc: class labels -> sampled images, through :class:`scalewise.api.Pipeline`.

    Artifacts: ``transformer`` and ``tokenizer`` (our model files). ``predict`` input: a
    DataFrame with an int column ``class_label`` and an optional int column ``seed`` (rows with
    one seed are drawn as one batch); output: uint8 (N, H, W, C), 0..255.
    """

    def load_context(self, context) -> None:
        from scalewise.api import load

        self.pipe = load(model=context.artifacts["transformer"], tokenizer=context.artifacts["tokenizer"])

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import numpy as np

        frame = model_input
        labels = [int(v) for v in frame["class_label"]]
        seeds = [int(v) for v in frame["seed"]] if "seed" in frame else [0] * len(labels)
        out = np.zeros((len(labels), *self.pipe.image_shape), dtype=np.uint8)
        for seed in dict.fromkeys(seeds):
            rows = [i for i, s in enumerate(seeds) if s == seed]
            images = self.pipe.sample_arrays([labels[i] for i in rows], seed=seed, **(params or {}))
            out[rows] = images
        return out


def _signature(image_shape: tuple[int, int, int]):
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs = Schema([ColSpec("long", "class_label"), ColSpec("long", "seed", required=False)])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_sampler(transformer: str | os.PathLike, tokenizer: str | os.PathLike) -> str:
    """Log ``transformer`` + ``tokenizer`` to the active MLflow run as the pyfunc ``model``.

    Returns the logged model's URI. The run gets the tags ``scalewise.weights_md5`` (the
    transformer file's MD5) and ``scalewise.model_uri``.
    """
    import mlflow
    import pandas as pd
    import torch

    from importlib.metadata import version
    from scalewise.models.checkpoints import load_tokenizer

    tok = load_tokenizer(tokenizer)
    side = tok.cfg.downsample * tok.patch_nums[-1]
    shape = (side, side, tok.cfg.in_channels)
    with tempfile.TemporaryDirectory(prefix="scalewise-log-") as tmp:  # fixed names: artifacts/transformer.pt, ...
        files = {}
        for key, src in (("transformer", transformer), ("tokenizer", tokenizer)):
            files[key] = str(Path(tmp) / f"{key}.pt")
            shutil.copyfile(src, files[key])
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=SamplerModel(), artifacts=files,
            signature=_signature(shape), input_example=pd.DataFrame({"class_label": [0, 1], "seed": [0, 0]}),
            pip_requirements=[f"scalewise=={version('scalewise')}", f"torch=={torch.__version__.split('+')[0]}"],
        )
    mlflow.set_tags({MD5_TAG: file_md5(transformer), URI_TAG: info.model_uri})
    return info.model_uri


def register_evaluated(client, experiment_id: str, model: str, model_file: str | os.PathLike, fid: float,
                       protocol: str) -> Any | None:
    """Register ``scalewise-<model>`` from the run that logged ``model_file``'s weights; crown the best.

    The version is tagged ``fid`` and ``scalewise.fid_protocol`` (FIDs are comparable only under
    one protocol: profile, sample count, extractor). Re-running with the same weights reuses
    their version. The alias ``champion`` moves to the lowest-FID version of the same protocol.
    Returns the version, or None when no run logged these weights (trained with tracking off).
    """
    md5 = file_md5(model_file)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{MD5_TAG}` = '{md5}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or URI_TAG not in runs[0].data.tags:
        return None
    run = runs[0]
    name = registered_name(model)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"scalewise {model}: transformer + tokenizer "
                                                         "(pyfunc: class_label -> uint8 images)")
    versions = client.search_model_versions(f"name = '{name}'")
    version = next((v for v in versions if v.tags.get(MD5_TAG) == md5), None)
    if version is None:
        version = client.create_model_version(name, run.data.tags[URI_TAG], run_id=run.info.run_id,
                                              tags={MD5_TAG: md5})
    client.set_model_version_tag(name, version.version, "fid", f"{fid:.6g}")
    client.set_model_version_tag(name, version.version, PROTOCOL_TAG, protocol)
    scored = [(float(v.tags["fid"]), int(v.version)) for v in client.search_model_versions(f"name = '{name}'")
              if v.tags.get(PROTOCOL_TAG) == protocol and "fid" in v.tags]
    scored.append((fid, int(version.version)))
    best = min(scored)[1]
    client.set_registered_model_alias(name, ALIAS, str(best))
    return client.get_model_version(name, str(version.version))
