"""Non-finite weights and distributions are clear errors, never garbage samples."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scalewise.sampling.logits import draw
from swtest import ROOT, TINY_MODEL


def test_draw_rejects_a_nan_distribution_instead_of_returning_the_last_token():
    probs = torch.full((2, 3, 8), 1 / 8)
    gen = torch.Generator().manual_seed(0)
    assert draw(probs, gen).max() < 8
    probs[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite at 1 of 6 positions"):
        draw(probs, gen)


def test_sampling_from_nan_weights_names_the_file(tmp_path):
    from scalewise.models.checkpoints import save_model
    from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
    from scalewise.models.transformer import ScaleTransformer, TransformerConfig

    save_model(tmp_path / "tok.pt", Tokenizer(TokenizerConfig(**TINY_MODEL)))
    model = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=64, cvae=8,
                                               patch_nums=[1, 2, 3, 4], num_classes=3))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(tmp_path / "nan.pt", model)
    out = subprocess.run([sys.executable, "-m", "scalewise.cli.main", "sample", "--model", str(tmp_path / "nan.pt"),
                          "--tokenizer", str(tmp_path / "tok.pt"), "--out", str(tmp_path / "g.png")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nan.pt" in out.stderr and "hold NaN or inf values" in out.stderr
    assert not (tmp_path / "g.png").exists()
