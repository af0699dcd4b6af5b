"""Token clamping: the completed observation and the two rules that mark a token known."""

from __future__ import annotations

import pytest
import torch

from scalewise.core.images import to_unit
from scalewise.posterior.clamp import ClampPlan, clamp_plan, complete_observation
from scalewise.models.quantizer import area_down, nearest_code
from scalewise.posterior.measurements import build_operator


@pytest.fixture(scope="module")
def tok_x(trained_tokenizer):
    tok, test_u8 = trained_tokenizer
    return tok.eval(), to_unit(test_u8[:6])  # 16 px digits, patch_nums (1, 2, 3, 4)


def test_random_mask_with_30_percent_observed_is_clamped_at_coarse_scales(tok_x):
    tok, x = tok_x
    op = build_operator("random_inpaint", {"ratio": 0.7}, x.shape[-1], x.shape[1], num_images=x.shape[0], seed=3)
    y = op(x)
    by_fraction = clamp_plan(tok, op, y, min_observed=0)
    both = clamp_plan(tok, op, y)  # min_observed=8
    assert not any(known.any() for _, known in by_fraction[:2])  # 30% < known_fraction everywhere
    assert all(bool(known.all()) for _, known in both[:2])  # 1x1 (~77 observed px) and 2x2 (~19)
    assert 0 < both[2][1].float().mean() < 1  # 3x3: footprints of ~28 px hold about 8 observed
    for (tok_a, known_a), (tok_b, known_b) in zip(by_fraction, both):
        assert torch.equal(tok_a, tok_b) and bool((known_b | ~known_a).all())  # rule 2 only adds tokens


def test_box_plan_is_unchanged_inside_the_box(tok_x):
    tok, x = tok_x
    op = build_operator("box_inpaint", {"size": 8}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op(x)
    old, new = clamp_plan(tok, op, y, min_observed=0), clamp_plan(tok, op, y)
    known_old, known_new = old[-1][1].view(-1, 4, 4), new[-1][1].view(-1, 4, 4)  # 4 px footprints
    assert not known_old[:, 1:3, 1:3].any() and not known_new[:, 1:3, 1:3].any()  # entirely inside the box
    assert known_old[:, 0].all() and known_new[:, 0].all()


def test_outpaint_fill_continues_the_background():
    size = 16
    x = -torch.ones(2, 1, size, size)
    x[:, :, 5:10, 2:6] = 0.8  # a blob on the kept (left) half; the rest is background -1
    op = build_operator("outpaint", {"keep": "left"}, size, 1, num_images=2)
    filled = complete_observation(op, op(x))
    unknown = op.known_mask().expand_as(x) == 0
    assert unknown.sum() == 2 * size * size // 2
    assert not (filled[unknown] == 0).any()  # no mid-grey left behind
    assert (filled[unknown] - x[unknown]).abs().max() < 0.1
    torch.testing.assert_close(filled[~unknown], x[~unknown])


def test_clamp_plan_checks_its_rules(tok_x):
    tok, x = tok_x
    op = build_operator("identity", {}, x.shape[-1], x.shape[1])
    with pytest.raises(ValueError, match="min_observed"):
        clamp_plan(tok, op, x, min_observed=-1)
    with pytest.raises(ValueError, match="known_fraction"):
        clamp_plan(tok, op, x, known_fraction=0.0)


def test_residual_clamping_follows_the_samples_coarser_scales(tok_x):
    """``residual`` clamping re-quantises the observation's latent against the sample's own coarser
    scales: on the observation's own coarse tokens it gives the encoded tokens back; on other coarse
    tokens it gives what the quantizer picks for the remaining residual (and ``encoded`` does not)."""
    tok, x = tok_x
    op = build_operator("box_inpaint", {"size": 8}, x.shape[-1], x.shape[1], num_images=x.shape[0])
    y = op(x)
    residual = ClampPlan.build(tok, op, y, mode="residual")
    encoded = ClampPlan.build(tok, op, y, mode="encoded")
    obs_tokens = [t for t, _ in clamp_plan(tok, op, y)]
    pn = tok.patch_nums
    for si in range(len(pn)):
        f_own = tok.idx_to_f_hat([t.view(-1, pn[k], pn[k]) for k, t in enumerate(obs_tokens[:si])]) if si else \
            torch.zeros_like(residual.latent)
        assert torch.equal(residual.at(si, f_own)[0], obs_tokens[si])
    g = torch.Generator().manual_seed(0)
    other = [torch.randint(0, tok.cfg.vocab_size, (x.shape[0], p, p), generator=g) for p in pn[:2]]
    f_other = tok.idx_to_f_hat(other)
    tokens, known = residual.at(2, f_other)
    rest = area_down(residual.latent - f_other, pn[2])
    expected = nearest_code(rest.permute(0, 2, 3, 1).reshape(-1, rest.shape[1]), tok.quantize.embedding.weight)
    assert torch.equal(tokens, expected.view_as(tokens)) and torch.equal(known, encoded.at(2, f_other)[1])
    assert not torch.equal(tokens, encoded.at(2, f_other)[0])
    with pytest.raises(ValueError, match="clamp_mode"):
        ClampPlan.build(tok, op, y, mode="fresh")
