"""Shared fixtures: a tiny trained tokenizer and offline, telemetry-free tool settings."""

from __future__ import annotations

import os

import pytest
import torch

from swtest import TINY_MODEL, digits_u8  # noqa: E402  (tests/ is on sys.path)

for key, value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "GIT_AUTHOR_NAME": "scalewise-test",
    "GIT_AUTHOR_EMAIL": "test@scalewise.invalid",
    "GIT_COMMITTER_NAME": "scalewise-test",
    "GIT_COMMITTER_EMAIL": "test@scalewise.invalid",
}.items():
    os.environ.setdefault(key, value)

# `make test` runs the suite on one pytest-xdist worker per core. Each worker, and every process it
# starts (stages, CLI calls inherit OMP_NUM_THREADS), then computes on one thread, so the workers
# never oversubscribe the cores. Results are compared within a test, at one thread count.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The modules whose fixtures run whole pipelines start first, so the longest file does not start last
# on a worker while the other one idles (`make test` keeps xdist's collection order: --no-loadscope-reorder).
FIRST = ("test_paper_table.py", "test_pipeline.py", "test_flows.py", "test_spine.py", "test_cli.py",
         "test_official.py", "test_cli_help.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: file order kept otherwise


@pytest.fixture(scope="session")
def trained_tokenizer(tmp_path_factory):
    """A tiny tokenizer trained for a few hundred steps on 16 px digits (a few seconds)."""
    from scalewise.models.tokenizer import TokenizerConfig
    from scalewise.training.tokenizer import TrainTokenizerConfig, train_tokenizer

    images, _ = digits_u8(16)
    cfg = TrainTokenizerConfig(model=TokenizerConfig(**TINY_MODEL), steps=300, batch_size=32, lr=3e-3,
                           warmup_steps=20, dead_code_every=50, dead_code_min_usage=0.5,
                           log_every=50, ckpt_every=1000, seed=0)
    torch.manual_seed(0)
    result = train_tokenizer(cfg, images[:1500], "digits", tmp_path_factory.mktemp("tok"), progress=False)
    return result.model, images[1500:]
