"""Importing the official VAR release files: layout, exact equivalence, round trip, bad input, CLI.

No download: state dicts in the release layout (key names, shapes, buffers) are generated with
random values by ``official_layout``, which also holds an independent functional
implementation of the release architecture written directly against those keys.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from official_layout import (
    official_vae_state,
    official_var_state,
    ref_teacher_forcing_input,
    ref_vae_decode,
    ref_vae_encode,
    ref_var_logits,
)
from scalewise.models.checkpoints import load_models, save_model
from scalewise.models.official import load_official_var, save_official_var
from scalewise.models.official import OfficialCheckpointError, official_state_dicts
from scalewise.core.precision import compile_transformer
from scalewise.sampling.generate import cfg_scale, combine_cfg, generate
from swtest import ROOT

PATCH_NUMS = (1, 2, 4, 8)  # 32 px images, VAE downsampling 4
VAE_KW = dict(vocab_size=64, cvae=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, share_quant_resi=4,
              num_scales=len(PATCH_NUMS))


def write_release(tmp_path, depth=2, shared_aln=False, seed=0, vae_kw=None, var_name=None):
    """Release-layout files ``vae.pth`` and ``var_d{depth}.pth`` with random weights; returns paths and states."""
    vae = official_vae_state(**(vae_kw or VAE_KW), seed=seed)
    var = official_var_state(depth=depth, vocab_size=64, cvae=8, num_classes=5, patch_nums=PATCH_NUMS,
                             shared_aln=shared_aln, seed=seed + 1)
    vae_path, var_path = tmp_path / "vae.pth", tmp_path / (var_name or f"var_d{depth}.pth")
    torch.save(vae, vae_path)
    torch.save(var, var_path)
    return vae_path, var_path, vae, var


@pytest.mark.parametrize("shared_aln", [False, True])
def test_release_files_load_with_every_key_and_round_trip_bit_exactly(tmp_path, shared_aln):
    vae_path, var_path, vae, var = write_release(tmp_path, depth=3, shared_aln=shared_aln)
    release = load_official_var(vae_path, var_path)
    t, k = release.transformer.cfg, release.tokenizer.cfg
    assert (t.depth, t.width, t.heads, t.num_classes, t.patch_nums, t.shared_aln) == \
        (3, 192, 3, 5, list(PATCH_NUMS), shared_aln)
    assert (k.ch, k.ch_mult, k.num_res_blocks, k.downsample, k.vocab_size, k.cvae, k.share_quant_resi, k.use_attn) == \
        (32, [1, 2, 2], 1, 4, 64, 8, 4, True)
    assert release.image_size == 32
    save_official_var(release, tmp_path / "vae2.pth", tmp_path / "var2.pth")
    for original, path in ((vae, tmp_path / "vae2.pth"), (var, tmp_path / "var2.pth")):
        back = torch.load(path, weights_only=True)
        assert list(back) == list(original)  # same keys, same order
        for key, value in original.items():
            assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


@pytest.mark.parametrize("share_quant_resi", [4, 1, 0])  # partially shared, one shared, one per scale
def test_our_tokenizer_equals_the_release_architecture(tmp_path, share_quant_resi):
    vae_path, var_path, vae, _ = write_release(tmp_path, vae_kw={**VAE_KW, "share_quant_resi": share_quant_resi})
    tok = load_official_var(vae_path, var_path).tokenizer
    img = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours, ref = tok.encode(img), ref_vae_encode(vae, img, PATCH_NUMS)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    torch.testing.assert_close(tok.decode(ref), ref_vae_decode(vae, ref, PATCH_NUMS), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tok.teacher_forcing_input(ref), ref_teacher_forcing_input(vae, ref, PATCH_NUMS),
                               atol=1e-5, rtol=1e-4)
    save_official_var(load_official_var(vae_path, var_path), tmp_path / "vae2.pth", tmp_path / "var2.pth")
    back = torch.load(tmp_path / "vae2.pth", weights_only=True)
    assert list(back) == list(vae) and all(torch.equal(back[k], v) for k, v in vae.items())


@pytest.mark.parametrize("shared_aln", [False, True])
def test_our_transformer_logits_equal_the_release_architecture(tmp_path, shared_aln):
    vae_path, var_path, vae, var = write_release(tmp_path, depth=2, shared_aln=shared_aln)
    release = load_official_var(vae_path, var_path)
    img = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    idx = ref_vae_encode(vae, img, PATCH_NUMS)
    x_BLCv = ref_teacher_forcing_input(vae, idx, PATCH_NUMS)
    labels = torch.tensor([0, 3, 4, 5])  # 5 = the null class
    ref = ref_var_logits(var, labels, x_BLCv, PATCH_NUMS)
    with torch.no_grad():
        ours = release.transformer(labels, x_BLCv)
    assert ref.std() > 0.1  # random AdaLN and weights: the comparison is not trivial
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_sampling_a_release_model_equals_its_teacher_forced_logits(tmp_path):
    vae_path, var_path, _, _ = write_release(tmp_path, shared_aln=True)
    release = load_official_var(vae_path, var_path)
    model, tok = release.transformer, release.tokenizer
    labels = torch.tensor([1, 4])
    g = generate(model, tok, labels, cfg=1.5, seed=0, return_logits=True)
    assert g.images.shape == (2, 3, 32, 32)
    x = tok.teacher_forcing_input(g.tokens)
    with torch.no_grad():
        cond, uncond = model(labels, x), model(torch.full_like(labels, 5), x)
    for si, sl in enumerate(model.scale_slices()):
        full = combine_cfg(torch.cat((cond[:, sl], uncond[:, sl])), cfg_scale(1.5, si, len(PATCH_NUMS)))
        torch.testing.assert_close(g.logits[si], full, atol=1e-4, rtol=1e-4)


def test_compiled_blocks_sample_the_same_images(tmp_path):
    vae_path, var_path, _, _ = write_release(tmp_path)
    release = load_official_var(vae_path, var_path)
    eager = generate(release.transformer, release.tokenizer, [0, 2], cfg=1.5, seed=0, return_logits=True)
    compile_transformer(release.transformer, backend="aot_eager")
    compiled = generate(release.transformer, release.tokenizer, [0, 2], cfg=1.5, seed=0, return_logits=True)
    for a, b in zip(eager.logits, compiled.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- bad input


def test_bad_release_files_are_clear_errors(tmp_path):
    vae_path, var_path, vae, var = write_release(tmp_path)
    # a depth other than the file name says
    renamed = tmp_path / "var_d16.pth"
    renamed.write_bytes(var_path.read_bytes())
    with pytest.raises(OfficialCheckpointError, match="file name says depth 16 but it holds 2 blocks"):
        load_official_var(vae_path, renamed)
    # a VAR made for another VAE (codebook size)
    other = tmp_path / "other"
    other.mkdir()
    other_vae, _, _, _ = write_release(other, vae_kw={**VAE_KW, "vocab_size": 32})
    with pytest.raises(OfficialCheckpointError, match="expects a VAE with 64 codes of width 8.*has 32 codes"):
        load_official_var(other_vae, var_path)
    # truncated file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(var_path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.pth: cannot be loaded"):
        load_official_var(vae_path, cut)
    # not a VAR state dict at all
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "junk.pth")
    with pytest.raises(OfficialCheckpointError, match=r"junk.pth: not an official VAR checkpoint: missing \['class_emb"):
        load_official_var(vae_path, tmp_path / "junk.pth")
    # a missing, an unexpected and a mis-shaped key, all listed
    broken = dict(var)
    del broken["blocks.1.ffn.fc2.bias"]
    broken["blocks.0.extra"] = torch.zeros(1)
    broken["head.bias"] = torch.zeros(7)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(OfficialCheckpointError) as err:
        load_official_var(vae_path, tmp_path / "broken.pth")
    assert all(s in str(err.value) for s in ("blocks.1.ffn.fc2.bias", "blocks.0.extra", "head.bias: file (7,)"))
    # swapped files, and a scalewise checkpoint where a release file belongs
    with pytest.raises(OfficialCheckpointError, match="look swapped"):
        load_official_var(var_path, vae_path)
    ours = load_official_var(vae_path, var_path)
    save_model(tmp_path / "ours.pt", ours.transformer)
    with pytest.raises(OfficialCheckpointError, match="is a scalewise transformer checkpoint.*--model"):
        load_official_var(vae_path, tmp_path / "ours.pt")
    # a VAE without its phi convs
    torch.save({k: v for k, v in vae.items() if "quant_resi" not in k}, tmp_path / "nophi.pth")
    with pytest.raises(OfficialCheckpointError, match="no phi convs"):
        load_official_var(tmp_path / "nophi.pth", var_path)
    with pytest.raises(ValueError, match="give both --official-tokenizer and --official-var"):
        load_models(official_tokenizer=vae_path)


def test_only_a_causal_var_has_a_release_layout(tmp_path):
    vae_path, var_path, _, _ = write_release(tmp_path)
    release = load_official_var(vae_path, var_path)
    release.transformer.cfg.mask_kind = "markov"
    with pytest.raises(ValueError, match="only a causal VAR"):
        official_state_dicts(release)


# ----------------------------------------------------------------------------- command line


def scalewise(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalewise.cli.main", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.integration
def test_sample_and_restore_run_on_release_files(tmp_path):
    vae_path, var_path, _, _ = write_release(tmp_path)
    flags = ["--official-tokenizer", vae_path, "--official-var", var_path]
    out = scalewise("sample", *flags, "--classes", "1,3", "--per-class", "2", "--cfg", "1.5", "--dtype", "bf16",
                    "--out", tmp_path / "grid.png", "--folder", tmp_path / "samples")
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "grid.png").mode == "RGB"
    assert sorted(p.name for p in (tmp_path / "samples").iterdir())[0] == "00000_class1.png"
    photo = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    out = scalewise("restore", *flags, "--image", tmp_path / "photo.png", "--task", "superres", "--factor", "4",
                    "--guide-from-scale", "1", "--dtype", "bf16", "--out", tmp_path / "restored.png")
    assert out.returncode == 0, out.stderr
    assert "restored at 32x32" not in out.stderr and "restored at 8x8" in out.stderr  # y is image size / factor
    assert Image.open(tmp_path / "restored.png").size[1] >= 32
    out = scalewise("sample", "--official-tokenizer", vae_path, "--classes", "1")
    assert out.returncode != 0 and "give both --official-tokenizer and --official-var" in out.stderr


def test_phi_choice_at_the_release_schedule_ties():
    """With 10 scales and 4 phi convs, scales 2 and 7 lie halfway between two ticks; the release picks 1 and 3."""
    from scalewise.models.tokenizer import phi_index

    assert [phi_index(si, 10, 4) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


# ----------------------------------------------------------------------------- pipeline import


@pytest.mark.integration
def test_pipeline_stages_import_the_release_instead_of_training(tmp_path):
    """train_tokenizer / train@var with `official:` paths import the release files; SRDD fine-tunes from them."""
    import json

    from swtest import TINY_PARAMS, make_project, run

    from scalewise.models.checkpoints import load_tokenizer, load_transformer

    files = tmp_path / "release"
    files.mkdir()
    vae_path = files / "vae.pth"
    torch.save(official_vae_state(**VAE_KW), vae_path)
    var_state = official_var_state(depth=2, vocab_size=64, cvae=8, num_classes=10, patch_nums=PATCH_NUMS, seed=1)
    torch.save(var_state, files / "var_d2.pth")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["tracking"]["enabled"] = False
    params["prepare"].update(image_size=32, channels=3, max_per_class=12)
    params["train_tokenizer"]["model"] = dict(ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, downsample=4, vocab_size=64,
                                          cvae=8, patch_nums=list(PATCH_NUMS), quant_resi=0.5, share_quant_resi=4,
                                          beta=0.25, use_attn=True)
    params["train_tokenizer"]["official"] = str(vae_path)
    params["train"]["common"]["model"] = dict(depth=2, width=None, heads=None, mlp_ratio=4.0, cond_drop=0.1,
                                              masked_objective=False)
    params["train"]["common"]["steps"] = 2
    params["train"]["var"]["official"] = str(files / "var_d2.pth")
    params["train"]["srdd"]["init_from"] = "models/var.pt"
    root = make_project(tmp_path / "project", params)
    run([sys.executable, "-m", "stages.prepare"], root)
    out = run([sys.executable, "-m", "stages.train_tokenizer"], root).stdout
    assert "imported the official VQVAE" in out
    out = run([sys.executable, "-m", "stages.train", "--model", "var"], root).stdout
    assert "imported the official VAR" in out
    metrics = json.loads((root / "metrics/train_var.json").read_text())
    assert metrics["source"].endswith("var_d2.pth") and metrics["steps"] == 0 and np.isfinite(metrics["test_loss"])
    release = load_official_var(vae_path, files / "var_d2.pth")
    for ours, theirs in ((load_transformer(root / "models/var.pt"), release.transformer),
                         (load_tokenizer(root / "models/tokenizer.pt"), release.tokenizer)):
        theirs_state = theirs.state_dict()
        assert all(torch.equal(v, theirs_state[k]) for k, v in ours.state_dict().items())
    out = run([sys.executable, "-m", "stages.train", "--model", "srdd"], root).stdout
    assert json.loads((root / "metrics/train_srdd.json").read_text())["source"] == "trained"
    # params that do not describe the file are a clear error naming the fields
    params["train"]["common"]["model"]["depth"] = 3
    (root / "params.yaml").write_text(__import__("yaml").safe_dump(params))
    proc = run([sys.executable, "-m", "stages.train", "--model", "var"], root, check=False)
    assert proc.returncode == 2 and "depth: file 2 vs params 3" in proc.stderr, proc.stderr


def test_the_official_imagenet_profile_is_a_valid_params_file(tmp_path):
    """Every section of profiles/imagenet256-official.yaml parses with the stages' own configs, and DVC expands it."""
    import yaml
    from swtest import make_project, run

    from scalewise.core.config import from_dict
    from scalewise.data.prepare import PrepareConfig
    from scalewise.training.distill import DistillConfig
    from scalewise.training.evaluator import EvaluatorConfig
    from scalewise.posterior.guidance_config import guidance_config
    from scalewise.evaluation.frontier import FrontierConfig
    from scalewise.posterior.measurements import build_operator
    from scalewise.models.tokenizer import TokenizerConfig
    from scalewise.training.tokenizer import TrainTokenizerConfig
    from scalewise.training.transformer import TrainConfig, VariantConfig
    from scalewise.models.transformer import TransformerConfig
    from scalewise.posterior.tasks import DegradeConfig
    from scalewise.evaluation.plan import EvaluateConfig, setting_plan
    from stages.reconstruct import ReconstructConfig

    path = ROOT / "profiles/imagenet256-official.yaml"
    p = yaml.safe_load(path.read_text())
    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(p) == set(default)
    prep = from_dict(PrepareConfig, p["prepare"], "prepare")
    vq = from_dict(TrainTokenizerConfig, dict(p["train_tokenizer"], model=dict(p["train_tokenizer"]["model"], in_channels=3)), "vq")
    vq.model.check_image_size(prep.image_size)
    assert vq.official and isinstance(vq.model, TokenizerConfig) and vq.model.patch_nums[-1] == 16
    common = from_dict(TrainConfig, p["train"]["common"], "train.common")
    variants = {k: from_dict(VariantConfig, v, k) for k, v in p["train"].items() if k != "common"}
    assert set(variants) == {"var", "srdd"} and variants["var"].official and variants["srdd"].init_from
    arch = TransformerConfig(depth=common.model.depth, width=common.model.width, heads=common.model.heads)
    assert (arch.width, arch.heads) == (1024, 16)  # VAR-d16
    from_dict(DistillConfig, p["distill"], "distill")
    from scalewise.models.heads import SamplingHeads
    from scalewise.training.heads import TrainHeadsConfig
    heads_cfg = from_dict(TrainHeadsConfig, p["train_heads"], "train_heads")
    from scalewise.evaluation.plan import HeadsEvaluateConfig
    from scalewise.evaluation.settings import SamplingSetting
    assert len(from_dict(HeadsEvaluateConfig, p["evaluate_heads"], "evaluate_heads").plan(SamplingSetting())) == 3
    from scalewise.evaluation.distill_frontier import DistillFrontierConfig
    assert len(from_dict(DistillFrontierConfig, p["distill_frontier"], "distill_frontier").students) == 4
    # VAR-d16 has about 310M parameters: the heads stay far below their 2% budget
    assert SamplingHeads(heads_cfg.heads.config(arch.width)).num_params() < heads_cfg.max_param_fraction * 300e6
    from_dict(EvaluatorConfig, p["train_evaluator"], "train_evaluator")
    deg = from_dict(DegradeConfig, p["degrade"], "degrade")
    for name, spec in deg.tasks.items():
        spec = dict(spec)
        build_operator(spec.pop("kind"), spec, prep.image_size, 3)
    rec = from_dict(ReconstructConfig, p["reconstruct"], "reconstruct")
    guidance_config(rec.guidance, "reconstruct.guidance")
    from_dict(FrontierConfig, p["posterior_frontier"], "posterior_frontier")
    from scalewise.bench.restore_cost import RestoreCostConfig
    assert set(from_dict(RestoreCostConfig, p["restore_cost"], "restore_cost").variants) == {"default", "fast", "masked_resampling"}
    ev = from_dict(EvaluateConfig, p["evaluate"], "evaluate")
    assert ev.inception_weights and all(setting_plan(ev, m) for m in ev.models)
    root = make_project(tmp_path, p)
    stages = run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], root).stdout.split()
    assert {"train@var", "train@srdd", "evaluate@srdd_distilled", "reconstruct@srdd-box_inpaint"} <= set(stages)
    from scalewise.project.seeds import seed_settings
    assert seed_settings(p) is None  # no seed experiments at this scale


def test_imported_models_hold_no_meta_tensors_and_match_a_normal_load(tmp_path):
    """Release models are built without random init (meta device) and then take every tensor from the file."""
    vae_path, var_path, _, _ = write_release(tmp_path)
    release = load_official_var(vae_path, var_path)
    for model in (release.tokenizer, release.transformer):
        assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
        assert all(p.requires_grad for p in model.parameters())
    from scalewise.models.transformer import ScaleTransformer

    eager = ScaleTransformer(release.transformer.cfg)
    eager.load_state_dict(release.transformer.state_dict())
    for name, buf in eager.named_buffers():
        assert torch.equal(buf, dict(release.transformer.named_buffers())[name]), name
