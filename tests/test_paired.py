"""Paired standard errors of T4's margins (scalewise.evaluation.paired)."""

from __future__ import annotations

import math

import pytest
import torch

from scalewise.evaluation.paired import mean_se, paired_columns, paired_se, read_per_image


def test_paired_se_is_the_spread_of_the_differences_over_root_n():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert paired_se(a, torch.zeros(4)) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert paired_se(a, a - 0.5) == pytest.approx(0.0)  # a constant margin is known exactly
    assert mean_se(a) == pytest.approx(paired_se(a, torch.zeros(4)))
    assert math.isnan(paired_se(torch.ones(1), torch.zeros(1)))


def test_pairing_cancels_the_images_difficulty():
    g = torch.Generator().manual_seed(0)
    difficulty = 10 * torch.randn(200, generator=g)  # shared by both methods
    a = difficulty + 1.0 + 0.1 * torch.randn(200, generator=g)
    b = difficulty + 0.1 * torch.randn(200, generator=g)
    assert paired_se(a, b) < 0.05 < 0.5 < mean_se(a)


def test_paired_se_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        paired_se(torch.zeros(3), torch.zeros(4))


def test_per_image_scores_round_trip_and_pair_on_shared_images(tmp_path):
    path = tmp_path / "per_image.csv"
    path.write_text("method,index,psnr,ssim,consistency\n"
                    "clamp,7,10.0,0.5,1.0\nclamp,9,12.0,0.5,1.0\nclamp,11,11.0,0.5,1.0\n"
                    "guided,7,11.0,0.6,0.5\nguided,9,14.0,0.6,0.5\n")
    per_image = read_per_image(path)
    assert per_image == {"clamp": {7: 10.0, 9: 12.0, 11: 11.0}, "guided": {7: 11.0, 9: 14.0}}
    cols = paired_columns(per_image, "guided")
    assert set(cols) == {"psnr_se", "psnr_se_vs_clamp"}  # no prior in the file: no column for it
    assert cols["psnr_se_vs_clamp"] == pytest.approx(paired_se(torch.tensor([1.0, 2.0]), torch.zeros(2)))
    assert "psnr_se_vs_clamp" not in paired_columns(per_image, "clamp")  # never against itself


def test_per_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="per_image.csv: no per-image scores"):
        read_per_image(tmp_path / "per_image.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("method,index,ssim\nclamp,1,0.5\n")
    with pytest.raises(ValueError, match=r"bad\.csv: expected the columns method, index and psnr"):
        read_per_image(bad)
