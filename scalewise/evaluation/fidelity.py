"""Generation-quality metrics (FID, IS, KID, precision / recall) through torch-fidelity.

Two feature extractors, named as torch-fidelity names them:

- ``scalewise-evaluator``: the domain classifier of :mod:`scalewise.models.evaluator`. FID, KID and
  precision / recall use its penultimate features ``feat``; IS uses the softmax of its class
  ``logits``. Offline; numbers compare only between runs with the same evaluator file.
- ``inception-v3-compat``: torch-fidelity's Inception-v3 (the numbers papers report; grey
  images are repeated to RGB and everything is resized to 299 px). Used only when its weights
  file is on disk: torch-fidelity would otherwise download it.

Every metric dict names its extractor; :class:`ExtractorSpec` records which weights file (and
its sha256) produced it.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from scalewise.models.evaluator import load_evaluator
from scalewise.core.images import to_unit

EVALUATOR = "scalewise-evaluator"
INCEPTION = "inception-v3-compat"
INCEPTION_FILE = os.path.basename(URL_INCEPTION_V3)  # the name torch.hub caches the download under
# A few (key, shape) pairs of torch-fidelity's Inception-v3 state dict: first conv, last block, classifier.
INCEPTION_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# Feature layer per metric (isc, fid, kid, prc) for each extractor.
LAYERS = {
    EVALUATOR: {"isc": "logits", "fid": "feat", "kid": "feat", "prc": "feat"},
    INCEPTION: {"isc": "logits_unbiased", "fid": "2048", "kid": "2048", "prc": "2048"},
}
ISC_SPLITS = 10  # torch-fidelity's default: IS is averaged over this many splits
PRC_NEIGHBORHOOD = 3  # k of the k-NN balls of precision / recall (torch-fidelity's default)
MIN_SAMPLES = max(ISC_SPLITS, PRC_NEIGHBORHOOD + 1, 2)  # per input; fewer gives NaN or errors
KID_SUBSET_SIZE = 1000  # default KID subset size, capped at the number of images
SEED = 2020  # torch-fidelity's rng_seed default (IS shuffle, KID subsets)


# ----------------------------------------------------------------------------- extractor


class EvaluatorFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of a saved :class:`~scalewise.models.evaluator.Evaluator`.

    torch-fidelity builds extractors by name as ``cls(name, features_list, **kwargs)`` with all
    ``calculate_metrics`` kwargs; the evaluator file comes in as ``feature_extractor_weights_path``.
    Input: uint8 batches (B, C, H, W) in 0..255 as the evaluator was trained on.
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"feature extractor {name!r} needs feature_extractor_weights_path= (an evaluator "
                             f"file made by the train_evaluator stage)")
        self.evaluator = load_evaluator(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "feat", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return LAYERS[EVALUATOR][metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 (B, C, H, W) -> the requested features, float32: ``feat`` (B, D), ``logits`` (B, K)."""
        if x_BCHW.dtype != torch.uint8:
            raise ValueError(f"{self.name} expects uint8 images, got {x_BCHW.dtype}")
        feat_BD = self.evaluator.features(to_unit(x_BCHW))
        out = {"feat": feat_BD, "logits": self.evaluator.classify(feat_BD)}
        return tuple(out[name].float() for name in self.features_list)


if EVALUATOR not in FEATURE_EXTRACTORS_REGISTRY:  # the registry refuses a second registration
    torch_fidelity.register_feature_extractor(EVALUATOR, EvaluatorFeatureExtractor)


@dataclass(frozen=True)
class ExtractorSpec:
    """Which feature extractor measured a metric: torch-fidelity's name, weights file, its sha256."""

    name: str  # "scalewise-evaluator" or "inception-v3-compat"
    weights: str  # path of the weights file
    sha256: str  # hex digest of the weights file

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.name} ({self.weights}, sha256 {self.sha256[:12]})"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_inception_weights(path: str | os.PathLike) -> None:
    """Check that ``path`` is a weights-only state dict shaped like torch-fidelity's Inception-v3.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not loadable with ``weights_only=True``, or a key is missing or mis-shaped
            (the message names the key and both shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Inception-v3 weights not found (params key evaluate.inception_weights); "
                                f"point it at a local copy of {INCEPTION_FILE}, or set it to null to use the "
                                f"domain evaluator")
    try:  # weights-only here, because torch-fidelity itself loads the file with a full unpickler
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise ValueError(f"{path}: cannot be loaded as a weights-only state dict (evaluate.inception_weights): "
                         f"{exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected an Inception-v3 state dict, got a {type(state).__name__} "
                         f"(evaluate.inception_weights)")
    for key, shape in INCEPTION_SHAPES.items():
        if key in state and (not torch.is_tensor(state[key]) or tuple(state[key].shape) != shape):
            got = tuple(state[key].shape) if torch.is_tensor(state[key]) else type(state[key]).__name__
            raise ValueError(f"{path}: {key} has shape {got}, torch-fidelity's {INCEPTION} needs {shape}; "
                             f"not the {INCEPTION_FILE} weights (evaluate.inception_weights)")
    missing = [key for key in INCEPTION_SHAPES if key not in state]
    if missing:
        raise ValueError(f"{path}: no {missing} in the state dict; not the {INCEPTION_FILE} weights "
                         f"(evaluate.inception_weights)")


def resolve_extractor(evaluator_path: str | os.PathLike | None,
                      inception_weights: str | os.PathLike | None) -> ExtractorSpec:
    """The extractor to measure with, first match wins:

    1. ``inception_weights`` (params ``evaluate.inception_weights``) if given: must be a valid file;
    2. torch-fidelity's Inception-v3 file in torch's hub cache (``<hub>/checkpoints/<original name>``);
    3. the domain evaluator at ``evaluator_path`` (made by the ``train_evaluator`` stage).

    Raises:
        FileNotFoundError: the named Inception file or the evaluator file does not exist.
        ValueError: the Inception file is not shaped like torch-fidelity's, or the evaluator file is
            not an evaluator checkpoint.
    """
    if inception_weights is not None:
        path = Path(inception_weights).expanduser()
        check_inception_weights(path)
        return ExtractorSpec(INCEPTION, str(path), _sha256_file(path))
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if hub.is_file():
        check_inception_weights(hub)
        return ExtractorSpec(INCEPTION, str(hub), _sha256_file(hub))
    if evaluator_path is None or not Path(evaluator_path).is_file():
        raise FileNotFoundError(f"{evaluator_path}: evaluator not found; run the train_evaluator stage, or set "
                                f"evaluate.inception_weights to a local copy of {INCEPTION_FILE}")
    load_evaluator(evaluator_path)  # a clear error now rather than inside torch-fidelity
    return ExtractorSpec(EVALUATOR, str(evaluator_path), _sha256_file(Path(evaluator_path)))


# ----------------------------------------------------------------------------- metrics


class _ImagesU8(Dataset):
    """uint8 images (N, C, H, W) as a Dataset of (C, H, W) tensors; grey -> RGB if ``rgb``."""

    def __init__(self, images_u8: torch.Tensor, rgb: bool) -> None:
        self.images_u8, self.rgb = images_u8, rgb

    def __len__(self) -> int:
        return len(self.images_u8)

    def __getitem__(self, i: int) -> torch.Tensor:
        x_CHW = self.images_u8[i]
        return x_CHW.expand(3, -1, -1).contiguous() if self.rgb and x_CHW.shape[0] == 1 else x_CHW


def _check_images(name: str, images_u8: torch.Tensor) -> None:
    if not torch.is_tensor(images_u8) or images_u8.dtype != torch.uint8 or images_u8.dim() != 4 \
            or images_u8.shape[1] not in (1, 3):
        what = f"{images_u8.dtype} {tuple(images_u8.shape)}" if torch.is_tensor(images_u8) else type(images_u8).__name__
        raise ValueError(f"{name} must be uint8 images (N, C, H, W) with C = 1 or 3, got {what}")


def fidelity_metrics(samples_u8: torch.Tensor, reference_u8: torch.Tensor, extractor: ExtractorSpec,
                     kid_subset_size: int | None = None, cache_dir: str | os.PathLike | None = None,
                     reference_key: str | None = None, device: str = "cpu", seed: int = SEED) -> dict[str, Any]:
    """FID, IS, KID and precision / recall of generated images against reference images.

    Args:
        samples_u8: generated images, uint8 (N, C, H, W) in 0..255 (torch-fidelity's input1).
        reference_u8: real images, uint8 (N_ref, C, H, W) (input2), same C, H, W.
        extractor: from :func:`resolve_extractor`.
        kid_subset_size: KID subset size (params ``evaluate.kid_subset_size``), >= 2; default
            1000; capped at ``min(N, N_ref)``.
        cache_dir, reference_key: both or neither. With both, torch-fidelity caches the reference
            features and FID statistics in ``cache_dir`` under a name made of ``reference_key``
            (letters, digits, ``._-``), a hash of the reference images and of the extractor weights,
            so a stale entry is never reused.
        device: ``cpu`` or ``cuda[:N]``.
        seed: torch-fidelity's ``rng_seed`` (IS split shuffle, KID subsets): equal inputs give
            equal numbers.

    Returns:
        ``{"fid", "isc", "isc_std", "kid", "kid_std", "precision", "recall"}`` as floats (IS over
        10 splits; precision = share of samples inside the reference manifold, recall the
        reverse, both in [0, 1]), plus ``"extractor"`` (its name), ``"num_samples"``,
        ``"num_reference"`` and ``"kid_subset_size"``.

    Raises:
        ValueError: bad images, fewer than 10 images in either input, a bad KID subset size,
            a bad cache key, or an unknown extractor.
    """
    _check_images("samples", samples_u8)
    _check_images("reference", reference_u8)
    if samples_u8.shape[1:] != reference_u8.shape[1:]:
        raise ValueError(f"samples {tuple(samples_u8.shape[1:])} and reference {tuple(reference_u8.shape[1:])} "
                         f"images differ in (C, H, W)")
    n, n_ref = len(samples_u8), len(reference_u8)
    if min(n, n_ref) < MIN_SAMPLES:
        raise ValueError(f"FID / IS / KID / precision-recall need at least {MIN_SAMPLES} generated and {MIN_SAMPLES} "
                         f"reference images (IS uses {ISC_SPLITS} splits, precision/recall the {PRC_NEIGHBORHOOD} "
                         f"nearest neighbours); got {n} generated and {n_ref} reference: raise "
                         f"evaluate.samples_per_class (generated images = samples_per_class x number of classes)")
    if kid_subset_size is not None and (isinstance(kid_subset_size, bool) or not isinstance(kid_subset_size, int)
                                        or kid_subset_size < 2):
        raise ValueError(f"evaluate.kid_subset_size must be null or an integer >= 2, got {kid_subset_size!r}")
    subset = min(kid_subset_size or KID_SUBSET_SIZE, n, n_ref)
    if extractor.name not in LAYERS:
        raise ValueError(f"unknown feature extractor {extractor.name!r}; allowed: {sorted(LAYERS)}")
    if extractor.name == INCEPTION:
        check_inception_weights(extractor.weights)  # torch-fidelity loads it with a full unpickler
    if (cache_dir is None) != (reference_key is None):
        raise ValueError("give both cache_dir and reference_key to cache the reference statistics, or neither")
    cache: dict[str, Any] = {"cache": False}
    if cache_dir is not None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", str(reference_key)):
            raise ValueError(f"reference_key {reference_key!r} must use only letters, digits, '.', '_', '-'")
        ref_hash = hashlib.sha256(reference_u8.contiguous().numpy().tobytes()).hexdigest()
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # torch-fidelity appends "-<extractor name>-features-<layer>.pt" / "-stat-fid-<layer>.pt"
        cache = {"cache": True, "cache_root": str(cache_dir),
                 "input2_cache_name": f"{reference_key}-{ref_hash[:12]}-{extractor.sha256[:12]}"}

    rgb = extractor.name == INCEPTION
    layers = LAYERS[extractor.name]
    cuda = device.startswith("cuda")
    with torch.cuda.device(torch.device(device)) if cuda else nullcontext():
        out = torch_fidelity.calculate_metrics(
            input1=_ImagesU8(samples_u8, rgb), input2=_ImagesU8(reference_u8, rgb),
            isc=True, fid=True, kid=True, prc=True,
            feature_extractor=extractor.name, feature_extractor_weights_path=extractor.weights,
            feature_layer_isc=layers["isc"], feature_layer_fid=layers["fid"],
            feature_layer_kid=layers["kid"], feature_layer_prc=layers["prc"],
            isc_splits=ISC_SPLITS, kid_subset_size=subset, prc_neighborhood=PRC_NEIGHBORHOOD,
            rng_seed=seed, batch_size=64, save_cpu_ram=True, cuda=cuda, verbose=False, **cache,
        )
    return {
        "fid": float(out[torch_fidelity.KEY_METRIC_FID]),
        "isc": float(out[torch_fidelity.KEY_METRIC_ISC_MEAN]),
        "isc_std": float(out[torch_fidelity.KEY_METRIC_ISC_STD]),
        "kid": float(out[torch_fidelity.KEY_METRIC_KID_MEAN]),
        "kid_std": float(out[torch_fidelity.KEY_METRIC_KID_STD]),
        "precision": float(out[torch_fidelity.KEY_METRIC_PRECISION]),
        "recall": float(out[torch_fidelity.KEY_METRIC_RECALL]),
        "extractor": extractor.name,
        "num_samples": n,
        "num_reference": n_ref,
        "kid_subset_size": subset,
    }
