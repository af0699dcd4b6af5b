"""The one per-scale sampling loop: hook order and effect, masked resampling as a function."""

from __future__ import annotations

import torch

from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.sampling.generate import generate
from scalewise.sampling.loop import ScaleHooks, ScaleSettings, run_scales
from scalewise.sampling.resample import masked_resample

PN = [1, 2, 3]


def tiny_pair(kind: str = "causal") -> tuple[ScaleTransformer, Tokenizer]:
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(ch=8, ch_mult=[1, 2, 2], downsample=4, vocab_size=16, cvae=8,
                                    patch_nums=PN, share_quant_resi=2, in_channels=1)).eval()
    model = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=16, cvae=8, patch_nums=PN,
                                               num_classes=3, mask_kind=kind)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model, tok


class Recorder(ScaleHooks):
    """Records the calls; forces token 3 through the logits at scale 1 and token 5 at scale 2."""

    def __init__(self):
        self.calls: list[tuple] = []

    def on_start(self) -> None:
        self.calls.append(("start",))

    def on_logits(self, si, p, logits_BlV, f_hat_BChw):
        self.calls.append(("logits", si, p, tuple(logits_BlV.shape), float(f_hat_BChw.abs().sum()) > 0))
        if si == 1:
            logits_BlV = torch.full_like(logits_BlV, -1e4)
            logits_BlV[..., 3] = 0.0
        return logits_BlV

    def on_tokens(self, si, tokens_Bl):
        self.calls.append(("tokens", si))
        return torch.full_like(tokens_Bl, 5) if si == 2 else tokens_Bl

    def on_scale_end(self, si, f_hat_BChw=None) -> None:
        self.calls.append(("end", si))


def test_hooks_run_in_order_and_steer_the_scales():
    model, tok = tiny_pair()
    labels = torch.tensor([0, 2])
    rec = Recorder()
    out = run_scales(model, tok, labels, ScaleSettings(cfg=1.5), torch.Generator().manual_seed(0), rec,
                     return_logits=True)
    expected = [("start",)]
    for si, p in enumerate(PN):
        expected += [("logits", si, p, (2, p * p, 16), si > 0), ("tokens", si), ("end", si)]
    assert rec.calls == expected
    assert out.tokens[1].eq(3).all() and out.tokens[2].eq(5).all()
    assert not out.logits[1].argmax(-1).eq(3).all(), "return_logits keeps the model's logits, not the hook's"
    torch.testing.assert_close(out.images, tok.decode(out.tokens), atol=1e-5, rtol=1e-5)
    plain = generate(model, tok, labels, cfg=1.5, seed=0)
    assert torch.equal(plain.tokens[0], out.tokens[0])  # same draw before any hook changes a thing
    assert not torch.equal(plain.images, out.images)


def test_masked_resample_repredicts_only_low_confidence_tokens():
    probs = torch.tensor([0.9, 0.05, 0.05, 0.0]).repeat(2, 6, 1)
    tokens = torch.tensor([[0, 1, 0, 2, 0, 0], [0, 0, 0, 0, 0, 1]])
    seen = []

    def repredict(tokens_Bl, revealed_Bl):
        seen.append((tokens_Bl.clone(), revealed_Bl.clone()))
        return torch.tensor([0.0, 0.0, 0.0, 1.0]).repeat(2, 6, 1)  # the model is sure: token 3

    new, iters = masked_resample(probs, tokens, 0.5, 3, torch.Generator().manual_seed(0), repredict)
    low = tokens != 0
    assert iters == 1, "re-drawn tokens are judged by the distribution they came from (p=1): done"
    assert torch.equal(seen[0][0], tokens) and torch.equal(seen[0][1], ~low)
    assert torch.equal(new, torch.where(low, torch.full_like(tokens, 3), tokens))
    same, none = masked_resample(probs, torch.zeros_like(tokens), 0.5, 3, torch.Generator(), repredict)
    assert none == 0 and torch.equal(same, torch.zeros_like(tokens)) and len(seen) == 1
