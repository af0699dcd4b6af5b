"""Scale distillation: the student's schedule, its exact start from a Markov teacher, the
tokenizer view with the short schedule, and a resumable, deterministic distillation run."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch

from killrun import assert_same_run, killed_then_resumed
from scalewise.models.checkpoints import load_transformer, save_model
from scalewise.core.config import ConfigError
from scalewise.training.distill import (
    DistillConfig, distill, sampling_speed, schedule_savings, student_schedule, tokenizer_psnr,
)
from scalewise.models.student import (
    init_student, kl_to_teacher, teacher_logits_on_student_inputs, tokenizer_for, tokenizer_with_schedule,
)
from scalewise.core.images import to_unit
from scalewise.core.metrics import psnr
from scalewise.sampling.generate import generate
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig, phi_index
from scalewise.training.batches import encode_dataset
from scalewise.training.transformer import ModelSettings, TrainConfig, VariantConfig, build_model_config, \
    train_transformer
from scalewise.models.transformer import ScaleTransformer, TransformerConfig

TEACHER_PN = [1, 2, 3, 4, 5, 6, 8]


def random_teacher(mask_kind: str = "markov", masked_objective: bool = True, seed: int = 0) -> ScaleTransformer:
    """A tiny transformer with every weight random (adaLN-zero init would make blocks the identity)."""
    torch.manual_seed(seed)
    model = ScaleTransformer(TransformerConfig(depth=2, width=32, heads=2, vocab_size=64, cvae=8,
                                               patch_nums=TEACHER_PN, mask_kind=mask_kind,
                                               masked_objective=masked_objective))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def dcfg(**kw) -> DistillConfig:
    base = dict(drop=[2], steps=8, batch_size=8, lr=2e-3, warmup_steps=2, log_every=1, ckpt_every=3, seed=1,
                masked_prob=0.5)
    base.update(kw)
    return DistillConfig(**base)


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("kw, expected", [
    (dict(drop=[3, 5]), [1, 2, 4, 6, 8]),
    (dict(drop=[2, 3, 4, 5, 6]), [1, 8]),
    (dict(patch_nums=[1, 2, 4, 6, 8]), [1, 2, 4, 6, 8]),
    (dict(patch_nums=[1, 4, 8]), [1, 4, 8]),
])
def test_student_schedule_keeps_a_subsequence(kw, expected):
    assert student_schedule(TEACHER_PN, DistillConfig(**kw)) == expected


@pytest.mark.parametrize("kw, match", [
    (dict(drop=[1]), r"distill\.drop.*allowed: \[2, 3, 4, 5, 6\]"),
    (dict(drop=[8]), r"distill\.drop.*first and last"),
    (dict(drop=[7]), r"distill\.drop"),
    (dict(drop=[3, 3]), r"distill\.drop.*distinct"),
    (dict(drop=[]), r"distill\.drop"),
    (dict(patch_nums=[2, 4, 8]), r"distill\.patch_nums.*first and last"),
    (dict(patch_nums=[1, 2, 4]), r"distill\.patch_nums.*first and last"),
    (dict(patch_nums=[1, 7, 8]), r"distill\.patch_nums.*subsequence"),
    (dict(patch_nums=[1, 4, 2, 8]), r"distill\.patch_nums.*subsequence"),
    (dict(patch_nums=TEACHER_PN), r"distill\.patch_nums.*equals the teacher"),
])
def test_student_schedule_errors_name_the_parameter(kw, match):
    with pytest.raises(ConfigError, match=match):
        student_schedule(TEACHER_PN, DistillConfig(**kw))


@pytest.mark.parametrize("kw, match", [
    (dict(), r"exactly one of distill\.patch_nums .* and distill\.drop"),
    (dict(drop=[3], patch_nums=[1, 2, 8]), r"exactly one"),
    (dict(drop=[3], temperature=0.0), r"distill\.temperature must be > 0"),
    (dict(drop=[3], kl_weight=-1.0), r"distill\.kl_weight must be >= 0"),
    (dict(drop=[3], steps=0), r"distill\.steps must be >= 1"),
    (dict(drop=[3], masked_prob=1.0), r"distill\.masked_prob must be in \[0, 1\)"),
])
def test_config_errors_name_the_parameter(kw, match):
    with pytest.raises(ConfigError, match=match):
        DistillConfig(**kw)


def test_schedule_savings():
    s = schedule_savings(TEACHER_PN, [1, 2, 4, 6, 8])
    assert s["steps_saved"] == 2 and s["teacher_forward_passes"] == 7 and s["student_forward_passes"] == 5
    assert (s["teacher_tokens"], s["student_tokens"]) == (155, 121)


# ----------------------------------------------------------------------------- the student's start


@pytest.mark.parametrize("masked_objective", [True, False])
@pytest.mark.parametrize("student_pn", [[1, 2, 4, 6, 8], [1, 3, 8], [1, 8]])
def test_student_at_init_predicts_what_the_teacher_predicts_for_each_scale(student_pn, masked_objective):
    """Defining property: each student scale's logits equal the Markov teacher's logits of that
    scale, the teacher run on its own schedule with the student's input placed at that scale."""
    teacher = random_teacher(masked_objective=masked_objective)
    student = init_student(teacher, student_pn).eval()
    B, Cv = 3, teacher.cfg.cvae
    labels = torch.tensor([0, 4, 10])  # 10 = null class
    x_s = torch.randn(B, sum(p * p for p in student_pn) - 1, Cv)
    with torch.no_grad():
        s_logits = student(labels, x_s)
        x_t = torch.randn(B, teacher.cfg.num_tokens - 1, Cv)  # other teacher scales: arbitrary
        s_sl, t_sl = student.scale_slices(), teacher.scale_slices()
        for k, p in enumerate(student_pn[1:], start=1):  # inputs are offset by the start token
            j = TEACHER_PN.index(p)
            x_t[:, t_sl[j].start - 1:t_sl[j].stop - 1] = x_s[:, s_sl[k].start - 1:s_sl[k].stop - 1]
        t_logits = teacher(labels, x_t)
        helper = teacher_logits_on_student_inputs(teacher, labels, x_s, student_pn)
    for k, p in enumerate(student_pn):
        j = TEACHER_PN.index(p)
        torch.testing.assert_close(s_logits[:, s_sl[k]], t_logits[:, t_sl[j]], atol=1e-5, rtol=0)
    torch.testing.assert_close(helper, s_logits, atol=1e-5, rtol=0)
    assert float(kl_to_teacher(helper, s_logits)) < 1e-6


def test_teacher_logits_helper_on_the_teachers_own_schedule_is_its_forward():
    teacher = random_teacher()
    labels, x = torch.tensor([1, 2]), torch.randn(2, teacher.cfg.num_tokens - 1, teacher.cfg.cvae)
    with torch.no_grad():
        torch.testing.assert_close(teacher_logits_on_student_inputs(teacher, labels, x, TEACHER_PN),
                                   teacher(labels, x), atol=1e-5, rtol=0)


def test_kl_is_zero_only_for_equal_distributions():
    a = torch.randn(2, 5, 16)
    assert float(kl_to_teacher(a, a, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_to_teacher(a, torch.randn(2, 5, 16))) > 0.1


@pytest.mark.parametrize("kind", ["causal", "markov_prev"])
def test_non_markov_teacher_is_refused(kind):
    teacher = random_teacher(mask_kind=kind)
    with pytest.raises(ValueError, match=rf"Markov teacher .*mask_kind {kind!r}"):
        init_student(teacher, [1, 2, 4, 6, 8])
    with pytest.raises(ValueError, match="Markov teacher"):
        teacher_logits_on_student_inputs(teacher, torch.tensor([0]), torch.randn(1, 120, 8), [1, 2, 4, 6, 8])


# ----------------------------------------------------------------------------- tokenizer view


def test_tokenizer_view_shares_weights_and_codes_the_short_schedule(trained_tokenizer):
    tok, held_out = trained_tokenizer
    view = tokenizer_with_schedule(tok, [1, 2, 4])
    assert isinstance(view, Tokenizer) and view.patch_nums == (1, 2, 4) and tok.patch_nums == (1, 2, 3, 4)
    ours = dict(tok.named_parameters())
    for name, p in view.named_parameters():
        assert p is ours[name], name  # the same tensors, not copies
    assert len(list(view.parameters())) == len(ours)
    x = to_unit(held_out[:64])
    idx_maps = view.encode(x)
    assert [tuple(i.shape) for i in idx_maps] == [(64, 1, 1), (64, 2, 2), (64, 4, 4)]
    assert view.teacher_forcing_input(idx_maps).shape == (64, 2 * 2 + 4 * 4, tok.cfg.cvae)
    ref = Tokenizer(dataclasses.replace(tok.cfg, patch_nums=[1, 2, 4])).eval()  # built for the schedule:
    ref.load_state_dict(tok.state_dict())  # here its phi by position is the phi by patch size too
    assert all(torch.equal(a, b) for a, b in zip(ref.encode(x), idx_maps))
    with torch.no_grad():
        short = float(psnr(view.decode(idx_maps), x).mean())
        full = float(psnr(tok.decode(tok.encode(x)), x).mean())
    assert short > 18.0 and short > full - 3.0, (short, full)
    m = tokenizer_psnr(tok, [1, 2, 4], held_out[:64])
    assert m["tokenizer_psnr_short"] == pytest.approx(short, abs=1e-3)


def test_tokenizer_view_picks_phi_by_patch_size_and_the_full_schedule_decodes_like_the_tokenizer():
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(ch=8, ch_mult=[1, 2, 2], downsample=4, vocab_size=16, cvae=4,
                                    patch_nums=[1, 2, 3, 4, 5, 6, 8], share_quant_resi=4, in_channels=1)).eval()
    phis = list(tok.quantize.quant_resi.qresi_ls)
    full = [tok.quantize.quant_resi.for_scale(j, 7) for j in range(7)]
    student = tokenizer_with_schedule(tok, [1, 2, 4, 6, 8])  # the default drop: scales 3 and 5
    for k, p in enumerate([1, 2, 4, 6, 8]):
        assert student.quantize.quant_resi.for_scale(k, 5) is full[[1, 2, 3, 4, 5, 6, 8].index(p)], p
    by_position = [phis[phi_index(k, 5, 4)] for k in range(5)]  # the old rule: p=2 got phi 1, p=6 phi 2
    assert by_position[1] is phis[1] is not full[1] and by_position[3] is phis[2] is not full[5]
    same = tokenizer_with_schedule(tok, list(tok.patch_nums))
    with torch.no_grad():
        x = torch.rand(3, 1, 32, 32) * 2 - 1
        idx = tok.encode(x)
        assert all(torch.equal(a, b) for a, b in zip(same.encode(x), idx))
        assert torch.equal(same.decode(idx), tok.decode(idx))


def test_tokenizer_view_is_validated():
    tok = Tokenizer(TokenizerConfig(ch=8, vocab_size=16, cvae=4, patch_nums=[1, 2, 4], share_quant_resi=2))
    with pytest.raises(ConfigError, match="latent size 4"):
        tokenizer_with_schedule(tok, [1, 2])
    with pytest.raises(ConfigError, match="strictly increasing"):
        tokenizer_with_schedule(tok, [2, 1, 4])
    same = ScaleTransformer(TransformerConfig(depth=1, vocab_size=16, cvae=4, patch_nums=[1, 2, 4]))
    assert tokenizer_for(same, tok) is tok
    short = ScaleTransformer(TransformerConfig(depth=1, vocab_size=16, cvae=4, patch_nums=[1, 4]))
    assert tokenizer_for(short, tok).patch_nums == (1, 4)


# ----------------------------------------------------------------------------- distillation


@pytest.fixture(scope="module")
def teacher_setup(trained_tokenizer, tmp_path_factory):
    """A briefly trained Markov teacher (masked objective on) on the tiny tokenizer's codes."""
    from swtest import digits_u8

    tok, _ = trained_tokenizer
    images, labels = digits_u8(16)
    tokens, x = encode_dataset(tok, images, progress=False)
    tcfg = TrainConfig(model=ModelSettings(depth=1, width=32, heads=2, mlp_ratio=2.0), steps=60, batch_size=16,
                       lr=3e-3, warmup_steps=5, log_every=20, ckpt_every=1000, seed=0)
    mcfg = build_model_config(tcfg.model, VariantConfig("markov"), tok, 10)
    teacher = train_transformer(tcfg, mcfg, tokens, x, labels, "h", tmp_path_factory.mktemp("teacher"),
                                progress=False).model
    return tok, teacher, images, labels


def test_distillation_lowers_the_loss_and_is_deterministic(teacher_setup, tmp_path):
    tok, teacher, images, labels = teacher_setup
    cfg = dcfg(steps=120, batch_size=16, log_every=30, ckpt_every=1000, masked_prob=0.0)
    a = distill(cfg, teacher, tok, images, labels, "h", tmp_path / "a", progress=False)
    b = distill(cfg, teacher, tok, images, labels, "h", tmp_path / "b", progress=False)
    assert a.model.cfg.patch_nums == [1, 3, 4] and a.model.cfg.mask_kind == "markov"
    assert a.history[-1]["loss"] < a.history[0]["loss"], [r["loss"] for r in a.history]
    assert a.history[0]["kl"] < 0.05  # the student starts where the teacher is
    assert set(a.history[0]) >= {"step", "loss", "ce", "kl", "acc", "lr"}
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name


def test_distillation_resumes_exactly(teacher_setup, tmp_path):
    tok, teacher, images, labels = teacher_setup
    full = distill(dcfg(), teacher, tok, images, labels, "h", tmp_path / "a", progress=False)
    resumed = killed_then_resumed(lambda on_log: distill(
        dcfg(), teacher, tok, images, labels, "h", tmp_path / "b", on_log=on_log, progress=False), 5)
    assert resumed.resumed_from == 3
    assert_same_run(full, resumed)
    other = ScaleTransformer(teacher.cfg)  # a different teacher never resumes this run's checkpoint
    other.load_state_dict({k: v + 0.01 for k, v in teacher.state_dict().items()})
    assert distill(dcfg(), other, tok, images, labels, "h", tmp_path / "b", progress=False).resumed_from == 0


def test_nan_loss_keeps_the_last_checkpoint(teacher_setup, tmp_path):
    tok, teacher, images, labels = teacher_setup
    broken = ScaleTransformer(teacher.cfg)
    broken.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        broken.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan.*last good checkpoint"):
        distill(dcfg(), broken, tok, images, labels, "h", tmp_path, progress=False)


def test_distilled_student_saves_loads_and_samples_with_its_tokenizer_view(teacher_setup, tmp_path):
    tok, teacher, images, labels = teacher_setup
    student = distill(dcfg(steps=2), teacher, tok, images, labels, "h", tmp_path / "s", progress=False).model
    save_model(tmp_path / "student.pt", student, teacher_patch_nums=list(teacher.cfg.patch_nums))
    loaded = load_transformer(tmp_path / "student.pt")
    assert loaded.cfg.patch_nums == [1, 3, 4]
    view = tokenizer_for(loaded, tok)
    assert view.patch_nums == (1, 3, 4)
    g = generate(loaded, view, [0, 1, 2], cfg=1.5, seed=0, return_logits=True)
    assert g.images.shape == (3, 1, 16, 16) and [tuple(t.shape) for t in g.tokens] == [(3, 1, 1), (3, 3, 3), (3, 4, 4)]
    assert g.images.min() >= -1 and g.images.max() <= 1
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        generate(loaded, tok, [0], seed=0)
    speed = sampling_speed(teacher, loaded, tok, batch_size=4, runs=1)
    assert speed["teacher_images_per_s"] > 0 and speed["speedup"] == pytest.approx(
        speed["student_images_per_s"] / speed["teacher_images_per_s"])


def test_distill_stage_writes_its_outputs(teacher_setup, tmp_path, monkeypatch):
    """The stage end to end on tiny inputs (in process, tracking off)."""
    import yaml

    from scalewise.data.prepare import PrepareConfig, prepare_dataset, save_prepared

    tok, teacher, _, _ = teacher_setup
    prep = PrepareConfig(source="digits", image_size=16, channels=1, test_fraction=0.1, split_seed=0, max_per_class=30)
    save_prepared(prepare_dataset(prep), tmp_path / "data/prepared", prep)
    save_model(tmp_path / "models/tokenizer.pt", tok)
    save_model(tmp_path / "models/srdd.pt", teacher, variant="srdd")
    params = {"tracking": {"enabled": False},
              "distill": dict(patch_nums=[1, 2, 4], steps=4, batch_size=8, log_every=2, ckpt_every=2,
                              grid_per_class=1, bench_batch=4, bench_runs=1)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["distill"])
    from stages.distill import main

    main()
    m = json.loads((tmp_path / "metrics/distill.json").read_text())
    assert m["student_patch_nums"] == [1, 2, 4] and m["teacher_patch_nums"] == [1, 2, 3, 4] and m["steps_saved"] == 1
    assert len(m["test_acc_by_scale"]) == 3 and m["speedup"] > 0 and 0 <= m["class_mean_proxy"] <= 1
    assert {"tokenizer_psnr_full", "tokenizer_psnr_short", "teacher_test_loss", "student_init_test_loss"} <= set(m)
    assert (tmp_path / "plots/distill.csv").read_text().splitlines()[0] == "step,loss,ce,kl,acc,lr"
    assert (tmp_path / "reports/distill/samples.png").stat().st_size > 0
    assert (tmp_path / "state/distill/last.pt").is_file()
    assert load_transformer(tmp_path / "models/srdd_distilled.pt").cfg.patch_nums == [1, 2, 4]
