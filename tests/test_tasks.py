"""Restoration tasks: the reported and validation subsets of the test split, and their seeds."""

from __future__ import annotations

import pytest
import torch

from scalewise.posterior.tasks import DegradeConfig, select_images, select_validation


@pytest.mark.parametrize("num_test,reported,wanted", [(500, 64, 64), (100, 64, 64), (70, 64, 10), (64, 64, 5),
                                                      (500, 64, 0)])
def test_validation_subset_is_disjoint_deterministic_and_capped(num_test, reported, wanted):
    idx = select_images(num_test, reported, seed=0)
    val = select_validation(num_test, idx, wanted, seed=1)
    assert val.dtype == torch.long and val.numel() == min(wanted, num_test - idx.numel())
    assert not set(val.tolist()) & set(idx.tolist())
    assert val.unique().numel() == val.numel() and (val >= 0).all() and (val < num_test).all()
    assert torch.equal(val, select_validation(num_test, idx, wanted, seed=1))
    if val.numel() and num_test - idx.numel() > wanted:
        assert not torch.equal(val, select_validation(num_test, idx, wanted, seed=2))  # the seed matters


def test_degrade_seeds_differ_between_the_reported_and_validation_sets():
    cfg = DegradeConfig(seed=3)
    assert cfg.validation_seed != cfg.seed
    seeds = [s for ti in range(6) for v in (False, True) for s in cfg.task_seeds(ti, v)]
    assert len(set(seeds)) == len(seeds)
    assert cfg.task_seeds(2) == (5, 1005)  # the reported set keeps its seeds (its measurements do not change)
    with pytest.raises(ValueError, match="validation_images"):
        DegradeConfig(validation_images=-1)
    with pytest.raises(ValueError, match="num_images"):
        select_validation(10, torch.arange(3), -1, seed=0)
