"""The domain evaluator and the torch-fidelity metrics (real torch-fidelity, offline, CPU)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from scalewise.core.config import ConfigError, from_dict
from scalewise.models.evaluator import Evaluator, EvaluatorArch, load_evaluator, save_evaluator
from scalewise.training.evaluator import EvaluatorConfig, evaluate_classifier, train_evaluator
from scalewise.evaluation.fidelity import (
    EVALUATOR, INCEPTION, INCEPTION_FILE, ExtractorSpec, fidelity_metrics, resolve_extractor,
)
from scalewise.core.images import to_unit
from scalewise.core.io import save_torch
from swtest import digits_u8

TINY = dict(width=8, feat_dim=32, steps=150, batch_size=64, lr=3e-3, weight_decay=5e-4, seed=0)
KEYS = {"fid", "isc", "isc_std", "kid", "kid_std", "precision", "recall"}


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """torch's hub cache in tmp_path: a real cached Inception file must not change the extractor."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def digits():
    """16 px digits: 1,500 train and 297 held-out images (uint8 (N, 1, 16, 16)) with labels."""
    x, y = digits_u8(16)
    return x[:1500], y[:1500], x[1500:], y[1500:]


@pytest.fixture(scope="module")
def trained(digits):
    """A tiny evaluator trained for 150 steps (about a second) and its metrics."""
    return train_evaluator(EvaluatorConfig(**TINY), *digits, progress=False)


@pytest.fixture(scope="module")
def spec(trained, tmp_path_factory) -> ExtractorSpec:
    path = tmp_path_factory.mktemp("evaluator") / "evaluator.pt"
    save_evaluator(path, trained[0], class_names=[str(i) for i in range(10)])
    return ExtractorSpec(EVALUATOR, str(path), hashlib.sha256(path.read_bytes()).hexdigest())


def shuffled_pixels(images_u8: torch.Tensor) -> torch.Tensor:
    """Every image's pixels permuted by one fixed permutation: same pixel statistics, no digits."""
    perm = torch.randperm(images_u8[0].numel(), generator=torch.Generator().manual_seed(0))
    return images_u8.flatten(1)[:, perm].view_as(images_u8)


# ----------------------------------------------------------------------------- evaluator


def test_evaluator_reaches_sensible_accuracy(trained):
    model, metrics = trained
    assert metrics["test_acc"] >= 0.90, metrics
    assert metrics["train_acc"] >= metrics["test_acc"] - 0.02
    assert metrics["steps"] == TINY["steps"]
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert not model.training


def test_training_is_deterministic_for_a_seed(digits):
    short = dict(TINY, steps=15)
    a, ma = train_evaluator(EvaluatorConfig(**short), *digits, progress=False)
    b, mb = train_evaluator(EvaluatorConfig(**short), *digits, progress=False)
    c, _ = train_evaluator(EvaluatorConfig(**dict(short, seed=1)), *digits, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and ma == mb
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("pad", [1, 2])
def test_translate_shifts_each_image_within_pad(pad):
    from scalewise.training.evaluator import _translate

    x_BCHW = torch.rand(64, 2, 9, 9) * 2 - 1
    out = _translate(x_BCHW, pad, torch.Generator().manual_seed(0))
    assert out.shape == x_BCHW.shape
    shifts = set()
    for b in range(len(x_BCHW)):  # exactly one shift (dy, dx) in -pad..pad explains each output
        padded = torch.nn.functional.pad(x_BCHW[b], (pad,) * 4, value=-1.0)
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(padded[:, dy:dy + 9, dx:dx + 9], out[b])]
        assert len(hits) == 1
        shifts.add(hits[0])
    assert len(shifts) > 1


def test_training_rejects_bad_labels(digits):
    train_u8, train_labels, test_u8, test_labels = digits
    with pytest.raises(ValueError, match=r"0\.\.4"):
        train_evaluator(EvaluatorConfig(steps=1), train_u8, train_labels, test_u8, test_labels, num_classes=5)


@pytest.mark.parametrize("channels,size", [(1, 8), (3, 33), (1, 80)])
def test_evaluator_shapes(channels, size):
    model = Evaluator(EvaluatorArch(channels, size, 5, width=4, feat_dim=12)).eval()
    x_BCHW = torch.rand(3, channels, size, size) * 2 - 1
    assert model.features(x_BCHW).shape == (3, 12)
    assert model(x_BCHW).shape == (3, 5)
    with pytest.raises(ValueError, match=rf"\(B, {channels}, {size}, {size}\)"):
        model(torch.zeros(3, channels, size + 1, size + 1))


@pytest.mark.parametrize("key,value,match", [
    ("steps", 0, "train_evaluator.steps"), ("width", 2.5, "train_evaluator.width"),
    ("lr", -1.0, "train_evaluator.lr"), ("augment", "yes", "train_evaluator.augment"),
    ("device", "tpu", "train_evaluator.device"), ("nope", 1, "unknown parameter"),
])
def test_config_errors_name_the_parameter(key, value, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(EvaluatorConfig, {key: value}, "params.yaml: train_evaluator")


def test_save_load_round_trip_gives_identical_logits(trained, digits, tmp_path):
    model, _ = trained
    path = save_evaluator(tmp_path / "ev.pt", model, class_names=["a"] * 10, data_hash="abc")
    loaded = load_evaluator(path)
    x_BCHW = to_unit(digits[2][:64])
    with torch.no_grad():
        assert torch.equal(model(x_BCHW), loaded(x_BCHW))
    assert loaded.arch == model.arch and not loaded.training
    test_u8, test_labels = digits[2], digits[3]
    assert evaluate_classifier(loaded, test_u8, test_labels) == evaluate_classifier(model, test_u8, test_labels)


def test_load_rejects_wrong_kind_and_mismatched_weights(trained, tmp_path):
    model, _ = trained
    save_torch(tmp_path / "tok.pt", {"kind": "tokenizer", "config": {}, "state_dict": {}})
    with pytest.raises(ValueError, match=r"tok\.pt.*tokenizer.*evaluator"):
        load_evaluator(tmp_path / "tok.pt")
    path = save_evaluator(tmp_path / "ev.pt", model)
    obj = torch.load(path, weights_only=True)
    obj["config"]["feat_dim"] = 16  # the weights no longer match the config
    save_torch(tmp_path / "bad.pt", obj)
    with pytest.raises(ValueError, match=r"bad\.pt.*does not match"):
        load_evaluator(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_evaluator(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- metrics


def test_fid_is_zero_on_itself_and_large_on_shuffled_pixels(spec, digits):
    train_u8, _, test_u8, _ = digits
    same = fidelity_metrics(test_u8, test_u8, spec)
    split = fidelity_metrics(test_u8, train_u8[:len(test_u8)], spec)
    shuffled = fidelity_metrics(shuffled_pixels(test_u8), test_u8, spec)
    assert abs(same["fid"]) < 1e-3
    assert 0 < split["fid"] and shuffled["fid"] > 10 * split["fid"], (split, shuffled)
    assert abs(same["kid"]) < 0.02 * shuffled["kid"], (same, shuffled)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert shuffled["recall"] < 0.5
    assert set(same) >= KEYS and all(isinstance(same[k], float) and math.isfinite(same[k]) for k in KEYS)
    assert (same["extractor"], same["num_samples"], same["num_reference"]) == (EVALUATOR, 297, 297)


def test_inception_score_of_digits_beats_noise(spec, digits):
    test_u8 = digits[2]
    noise_u8 = torch.randint(0, 256, test_u8.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = fidelity_metrics(test_u8, test_u8, spec)["isc"]
    noise = fidelity_metrics(noise_u8, test_u8, spec)["isc"]
    assert real > 2.0 * noise and 1.0 <= noise, (real, noise)
    assert real <= 10.0 + 1e-6  # at most the number of classes


def test_metrics_are_deterministic(spec, digits):
    a = fidelity_metrics(digits[2][:100], digits[0][:150], spec, kid_subset_size=50)
    b = fidelity_metrics(digits[2][:100], digits[0][:150], spec, kid_subset_size=50)
    assert a == b and a["kid_subset_size"] == 50 and a["kid_std"] > 0


def test_reference_statistics_are_cached(spec, digits, tmp_path):
    samples, reference = digits[2][:100], digits[0][:200]
    cache = tmp_path / "cache"
    first = fidelity_metrics(samples, reference, spec, cache_dir=cache, reference_key="digits16")
    files = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("digits16-") and "stat-fid" in name for name in files), files
    second = fidelity_metrics(samples, reference, spec, cache_dir=cache, reference_key="digits16")
    assert sorted(p.name for p in cache.iterdir()) == files and second == first
    assert second == fidelity_metrics(samples, reference, spec)  # cached == uncached
    # another reference under the same key gets its own entry rather than a stale one
    other = fidelity_metrics(samples, digits[0][200:400], spec, cache_dir=cache, reference_key="digits16")
    assert len(list(cache.iterdir())) > len(files) and other["fid"] != first["fid"]


def test_too_few_samples_say_which_param_to_raise(spec, digits):
    with pytest.raises(ValueError, match="samples_per_class"):
        fidelity_metrics(digits[2][:5], digits[0][:100], spec)
    with pytest.raises(ValueError, match="kid_subset_size"):
        fidelity_metrics(digits[2][:50], digits[0][:100], spec, kid_subset_size=1)
    with pytest.raises(ValueError, match="reference_key"):
        fidelity_metrics(digits[2][:50], digits[0][:100], spec, cache_dir="x")
    with pytest.raises(ValueError, match="differ"):
        fidelity_metrics(digits[2][:50], torch.zeros(50, 3, 16, 16, dtype=torch.uint8), spec)


def test_resolve_extractor_errors(spec, tmp_path):
    missing = tmp_path / "inception.pth"
    with pytest.raises(FileNotFoundError, match=r"inception\.pth.*evaluate\.inception_weights"):
        resolve_extractor(spec.weights, missing)
    bogus = tmp_path / "bogus.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, bogus)
    with pytest.raises(ValueError, match=r"fc\.weight.*\(10, 2048\).*\(1008, 2048\)"):
        resolve_extractor(spec.weights, bogus)
    with pytest.raises(FileNotFoundError, match="train_evaluator"):
        resolve_extractor(tmp_path / "no_evaluator.pt", None)
    resolved = resolve_extractor(spec.weights, None)
    assert resolved.name == EVALUATOR and len(resolved.sha256) == 64
    assert resolved.to_dict()["weights"] == spec.weights and EVALUATOR in resolved.describe()


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A randomly initialised state dict in the shape of torch-fidelity's Inception-v3 (no download)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pt")
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng(devices=[]):
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        model = FeatureExtractorInceptionV3(INCEPTION, ["2048"],
                                            feature_extractor_weights_path=str(folder / "empty.pt"))
    torch.save(model.state_dict(), folder / INCEPTION_FILE)
    return folder / INCEPTION_FILE


def test_inception_from_hub_cache_runs_on_grey_images(spec, digits, random_inception, empty_hub):
    (empty_hub / "checkpoints").mkdir(parents=True)
    (empty_hub / "checkpoints" / INCEPTION_FILE).symlink_to(random_inception)
    resolved = resolve_extractor(spec.weights, None)  # the cached Inception file wins over the evaluator
    assert resolved.name == INCEPTION and resolved.weights.endswith(INCEPTION_FILE)
    out = fidelity_metrics(digits[2][:10], digits[0][:10], resolved)  # grey (N, 1, 16, 16) -> RGB 299 px
    assert out["extractor"] == INCEPTION and all(math.isfinite(out[k]) for k in KEYS)
