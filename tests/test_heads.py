"""Learned sampling heads: identities with baseline sampling and fixed masked resampling, the
policy's selection rule, training (loss falls, a frozen backbone stays bit-identical), the
heads file and the errors of bad infer modes."""

from __future__ import annotations

import pytest
import torch

from scalewise.core.digest import weights_hash
from scalewise.models.checkpoints import load_heads, save_heads
from scalewise.models.heads import HeadsConfig, SamplingHeads
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig
from scalewise.sampling.adaptive import ThresholdPolicy, policy_select
from scalewise.sampling.generate import Resample, generate
from scalewise.training.heads import HeadsSettings, TrainHeadsConfig, train_heads

PN = [1, 2, 3, 4]


def tiny_srdd(seed: int = 0) -> tuple[ScaleTransformer, Tokenizer]:
    torch.manual_seed(seed)
    tok = Tokenizer(TokenizerConfig(ch=8, ch_mult=[1, 2, 2], downsample=4, vocab_size=16, cvae=8,
                                    patch_nums=PN, share_quant_resi=2, in_channels=1)).eval()
    model = ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=16, cvae=8, patch_nums=PN,
                                               num_classes=3, mask_kind="markov", masked_objective=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model, tok


def tokens_of(g) -> torch.Tensor:
    return torch.cat([t.flatten(1) for t in g.tokens], 1)


LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("cfg,schedule", [(1.5, "linear"), (2.3, "constant"), (0.0, "linear")])
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("resample", [None, Resample(kind="masked", threshold=0.2, iters=2)])
def test_heads_at_one_sample_exactly_the_baseline_tokens(cfg, schedule, per_token, resample):
    model, tok = tiny_srdd()
    heads = SamplingHeads(HeadsConfig(width=32, tau_per_token=per_token, cfg_per_token=per_token))
    base = generate(model, tok, LABELS, cfg=cfg, cfg_schedule=schedule, temperature=0.7, seed=3, resample=resample)
    for mode in ("guidance", "both") if resample is not None else ("guidance",):
        if mode == "both":  # the policy fixed to the threshold rule too
            g = generate(model, tok, LABELS, cfg=cfg, cfg_schedule=schedule, temperature=0.7, seed=3,
                         resample=resample, infer_mode=mode, heads=heads, policy=ThresholdPolicy(0.2))
        else:
            g = generate(model, tok, LABELS, cfg=cfg, cfg_schedule=schedule, temperature=0.7, seed=3,
                         resample=resample, infer_mode=mode, heads=heads)
        assert torch.equal(tokens_of(g), tokens_of(base)), mode
    # and the heads do act once they leave 1: a trained-looking temperature head changes the draw
    with torch.no_grad():
        heads.tau[2].bias.fill_(1.0)
    hot = generate(model, tok, LABELS, cfg=cfg, cfg_schedule=schedule, temperature=0.7, seed=3, resample=resample,
                   infer_mode="guidance", heads=heads)
    assert not torch.equal(tokens_of(hot), tokens_of(base))


def test_the_threshold_rule_as_a_policy_reproduces_fixed_masked_resampling():
    model, tok = tiny_srdd(1)
    rs = Resample(kind="masked", threshold=0.15, iters=3, min_scale=1)
    fixed = generate(model, tok, LABELS, cfg=1.5, seed=5, resample=rs)
    assert sum(fixed.resample_iters) > 0, "the fixed rule must re-mask something for the test to bite"
    pol = generate(model, tok, LABELS, cfg=1.5, seed=5, resample=rs, infer_mode="policy",
                   policy=ThresholdPolicy(0.15))
    assert torch.equal(tokens_of(pol), tokens_of(fixed))
    assert pol.resample_iters == fixed.resample_iters


def test_policy_select_caps_the_group_stops_and_leaves_kept_tokens():
    scores = torch.tensor([[3.0, -1.0, 2.0, 1.0, 0.5, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    keep = torch.zeros(2, 6, dtype=torch.bool)
    keep[0, 5] = True
    every = policy_select(scores, 0.0, keep_Bl=keep)
    assert every.tolist() == [[True, False, True, True, True, False], [True] * 6]
    capped = policy_select(scores, 0.0, torch.tensor([0.34, 0.01]), rho_min=0.02, keep_Bl=keep)
    assert capped[0].tolist() == [True, False, True, True, False, False]  # the ceil(0.34 * 6) = 3 highest
    assert not capped[1].any(), "a group size below rho_min stops the row"


def coded_set(tok: Tokenizer, n: int = 64, seed: int = 0):
    """Tokens from a fixed pattern plus noise (so the model has something to be calibrated on)."""
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randint(0, 16, (n, p, p), generator=g) % (4 + k) for k, p in enumerate(PN)]
    tokens_NL = torch.cat([m.flatten(1) for m in maps], 1)
    with torch.no_grad():
        x_NLCv = tok.teacher_forcing_input(maps)
    return tokens_NL, x_NLCv, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("freeze", [True, False])
def test_heads_training_lowers_the_loss_and_a_frozen_backbone_stays_bit_identical(tmp_path, freeze):
    model, tok = tiny_srdd()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainHeadsConfig(steps=80, batch_size=16, lr=1e-2, warmup_steps=5, log_every=20, ckpt_every=1000,
                           freeze_backbone=freeze, max_param_fraction=1.0, heads=HeadsSettings(hidden=8))
    result, heads, used = train_heads(cfg, model, *coded_set(tok), "synthetic", tmp_path / "state", progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"] and last["tau"] < first["tau"] and last["policy"] < first["policy"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the input model is never changed"
    if freeze:
        assert used is model
    else:
        assert any(not torch.equal(before[k], v) for k, v in used.state_dict().items())
    path = save_heads(tmp_path / "heads.pt", heads, weights_hash(model),
                      **({} if freeze else {"backbone": used.state_dict()}))
    heads2, used2 = load_heads(path, model)
    assert all(torch.equal(a, b) for a, b in zip(heads.state_dict().values(), heads2.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(used.state_dict().values(), used2.state_dict().values()))


def test_default_heads_add_at_most_two_percent_of_the_default_transformer():
    model = ScaleTransformer(TransformerConfig(depth=2, vocab_size=512, cvae=16, patch_nums=[1, 2, 3, 4, 5, 6, 8],
                                               num_classes=10, mask_kind="markov", masked_objective=True))
    heads = SamplingHeads(HeadsSettings().config(model.cfg.width))
    assert heads.num_params() <= 0.02 * sum(p.numel() for p in model.parameters())


def test_bad_infer_modes_and_heads_files_give_clear_errors(tmp_path):
    model, tok = tiny_srdd()
    heads = SamplingHeads(HeadsConfig(width=32))
    with pytest.raises(ValueError, match="unknown infer_mode 'fancy'.*baseline"):
        generate(model, tok, LABELS, infer_mode="fancy", heads=heads)
    with pytest.raises(ValueError, match="infer_mode 'policy' needs sampling heads"):
        generate(model, tok, LABELS, infer_mode="policy", resample=Resample(kind="masked"))
    with pytest.raises(ValueError, match="needs sampling heads"):
        generate(model, tok, LABELS, infer_mode="guidance")
    with pytest.raises(ValueError, match="set resample kind 'masked'"):
        generate(model, tok, LABELS, infer_mode="both", heads=heads)
    path = save_heads(tmp_path / "h.pt", heads, weights_hash(model))
    other, _ = tiny_srdd(seed=1)
    with pytest.raises(ValueError, match="trained on other transformer weights"):
        load_heads(path, other)
    wide = ScaleTransformer(TransformerConfig(depth=1, width=48, heads=2, vocab_size=16, cvae=8, patch_nums=PN,
                                              num_classes=3, mask_kind="markov", masked_objective=True))
    with pytest.raises(ValueError, match="width-32 transformer"):
        load_heads(path, wide)
    with pytest.raises(ValueError, match="holds a transformer checkpoint"):
        from scalewise.models.checkpoints import save_model
        load_heads(save_model(tmp_path / "m.pt", model), model)
