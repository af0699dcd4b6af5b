"""`scalewise restore` (a user's own image) and `scalewise bench restore`: outputs and bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from scalewise.cli.main import main
from scalewise.posterior.user_task import build_user_task, keep_mask_from_png, observed_size
from swtest import TINY_MODEL

SIZE = 16  # TINY_MODEL: downsample 4, last patch 4


def bomb_png(width: int, height: int) -> bytes:
    """A 1x1 grey PNG whose header claims ``width`` x ``height`` pixels (valid chunk CRCs)."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


@pytest.fixture
def scalewise(capsys):
    """Run the CLI in-process (as `scalewise ARGS`): returncode, stdout, stderr."""
    def run(*args: str) -> SimpleNamespace:
        rc = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)
    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from scalewise.models.checkpoints import save_model
    from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
    from scalewise.models.transformer import ScaleTransformer, TransformerConfig

    d = tmp_path_factory.mktemp("restore")
    torch.manual_seed(0)
    save_model(d / "tok.pt", Tokenizer(TokenizerConfig(**TINY_MODEL)))
    save_model(d / "srdd.pt", ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=64, cvae=8,
                                                                 patch_nums=[1, 2, 3, 4], num_classes=3,
                                                                 mask_kind="markov")))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(d / "img.png")
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(d / "big.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(d / "mask.png")
    Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8)).save(d / "grey.png")
    Image.fromarray(mask[:8, :8]).save(d / "small_mask.png")
    big_mask = np.zeros((40, 48), np.uint8)
    big_mask[10:30, 14:34] = 255
    Image.fromarray(big_mask).save(d / "big_mask.png")
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    (d / "bomb.png").write_bytes(bomb_png(20000, 20000))
    return d


@pytest.fixture
def restore(files, scalewise):
    def run(*args: str) -> SimpleNamespace:
        return scalewise("restore", "--model", str(files / "srdd.pt"), "--tokenizer", str(files / "tok.pt"), *args)
    return run


def test_keep_mask_is_the_complement_of_white_and_checked():
    m = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    m[..., 1:3, 1:3] = 255
    keep = keep_mask_from_png(m, (4, 4))
    assert keep.sum() == 12 and keep[0, 0, 1, 1] == 0 and keep[0, 0, 0, 0] == 1
    with pytest.raises(ValueError, match="the mask must have the image's size"):
        keep_mask_from_png(m, (8, 8))
    with pytest.raises(ValueError, match="must be binary"):
        keep_mask_from_png(m // 2, (4, 4))
    with pytest.raises(ValueError, match="no pixel to fill"):
        keep_mask_from_png(torch.zeros_like(m), (4, 4))


def test_user_tasks_build_the_operator_that_explains_y():
    x = torch.rand(1, 1, SIZE, SIZE) * 2 - 1
    keep = torch.ones(1, 1, SIZE, SIZE)
    keep[..., :4, :4] = 0
    op, y = build_user_task("inpaint", x, SIZE, 1, keep)
    assert torch.equal(y, x * keep) and op.kind == "mask"
    low = torch.rand(1, 1, SIZE // 4, SIZE // 4)
    op, y = build_user_task("superres", low, SIZE, 1, factor=4)
    assert y is low and op(torch.zeros(1, 1, SIZE, SIZE)).shape == low.shape
    op, y = build_user_task("outpaint", x, SIZE, 1, keep="top")
    assert torch.equal(y[..., SIZE // 2:, :], torch.zeros(1, 1, SIZE // 2, SIZE))
    with pytest.raises(ValueError, match="unknown task 'denoise'"):
        build_user_task("denoise", x, SIZE, 1)
    with pytest.raises(ValueError, match="factor 3 does not divide"):
        observed_size("superres", SIZE, 3)
    with pytest.raises(ValueError, match="inpaint needs a mask"):
        build_user_task("inpaint", x, SIZE, 1)
    with pytest.raises(ValueError, match=r"shape \(1, 1, 4, 4\)"):
        build_user_task("superres", x, SIZE, 1, factor=4)


@pytest.mark.parametrize("task_args", [
    ["--task", "inpaint", "--mask", "mask.png"],
    ["--task", "inpaint", "--mask", "big_mask.png"],  # image and mask centre-cropped and resized together
    ["--task", "superres", "--factor", "4"],
    ["--task", "deblur", "--sigma", "1.5", "--kernel-size", "5"],
    ["--task", "outpaint", "--keep", "right", "--method", "clamp+guided"],
    ["--task", "deblur", "--resample", "simple", "--resample-threshold", "0.5", "--resample-iters", "1"],
])
def test_restore_writes_the_observation_and_each_sample(files, restore, tmp_path, task_args):
    args = [a if not a.endswith(".png") else str(files / a) for a in task_args]
    image = files / ("big.png" if "superres" in task_args or "big_mask.png" in task_args else "img.png")
    out = restore("--image", str(image), *args, "--num-samples", "2", "--out", str(tmp_path / "r.png"),
                  "--folder", str(tmp_path / "pngs"), "--grad-steps", "2", "--guide-from-scale", "1")
    assert out.returncode == 0, out.stderr
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    source = Image.open(image)
    scale = 4 if "superres" in task_args else 1
    restored = Image.open(pngs[0])
    assert len(pngs) == 2 and restored.size == (source.size[0] * scale, source.size[1] * scale)  # the input's size
    if "inpaint" in task_args:  # the observed pixels are the input's own, at its resolution
        fill = np.asarray(Image.open(args[args.index("--mask") + 1])) == 255
        assert np.array_equal(np.asarray(restored)[~fill], np.asarray(source.convert("L"))[~fill])
    grid = Image.open(tmp_path / "r.png")
    assert grid.size[0] > 3 * SIZE  # observation + 2 restorations side by side, at the model's resolution
    if "superres" in task_args:
        assert "its centre square is restored at 4x4" in out.stderr
    if "big_mask.png" in task_args:
        assert "its centre square is restored at 16x16" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["--image", "img.png", "--task", "inpaint", "--mask", "small_mask.png"], "the mask must have the image's size"),
    (["--image", "img.png", "--task", "inpaint", "--mask", "grey.png"], "must be binary"),
    (["--image", "img.png", "--task", "inpaint"], "inpaint needs a mask"),
    (["--image", "img.png", "--task", "superres", "--factor", "3"], "factor 3 does not divide"),
    (["--image", "missing.png", "--task", "deblur"], "missing.png: no such image file"),
    (["--image", "broken.png", "--task", "deblur"], "broken.png: not a readable image"),
    (["--image", "bomb.png", "--task", "deblur"], "bomb.png: refused by Pillow's decompression-bomb guard"),
    (["--image", "img.png", "--task", "inpaint", "--mask", "bomb.png"], "refused by Pillow's decompression-bomb guard"),
    (["--image", "img.png", "--task", "deblur", "--mask", "mask.png"], "--mask only applies to --task inpaint"),
    (["--image", "img.png", "--task", "deblur", "--class-label", "7"], "--class-label 7 is out of range"),
    (["--image", "img.png", "--task", "deblur", "--resample", "masked", "--resample-threshold", "0.5",
      "--resample-iters", "1"], "masked_objective"),
])
def test_restore_bad_input_is_a_clear_error(files, restore, args, message):
    args = [a if not a.endswith(".png") else str(files / a) for a in args]
    out = restore(*args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_restore_refuses_a_checkpoint_of_another_kind(files, scalewise):
    out = scalewise("restore", "--model", str(files / "tok.pt"), "--tokenizer", str(files / "tok.pt"),
                    "--image", str(files / "img.png"), "--task", "deblur")
    assert out.returncode == 2 and "expected a transformer" in out.stderr


def test_bench_restore_reports_every_method_against_the_prior(tmp_path, scalewise):
    out = scalewise("bench", "restore", "--depth", "1", "--width", "32", "--heads", "2", "--image-size", "16",
                    "--downsample", "4", "--patch-nums", "1,2,4", "--vocab", "64", "--cvae", "8",
                    "--tokenizer-ch", "8", "--mask-kinds", "markov", "--tasks", "box_inpaint,sr_x4",
                    "--batch-sizes", "2", "--runs", "2", "--guide-from-scale", "1", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "r.json").read_text())
    assert [(r["task"], r["mask_kind"], r["batch_size"]) for r in records] == [("box_inpaint", "markov", 2),
                                                                           ("sr_x4", "markov", 2)]
    for r in records:
        assert set(r["sec_per_image"]) == {"prior", "clamp", "guided", "clamp+guided"}
        assert r["ratio_to_prior"]["prior"] == 1.0 and all(v > 0 for v in r["sec_per_image"].values())
    bad = scalewise("bench", "restore", "--depth", "1", "--image-size", "16", "--downsample", "4",
                    "--patch-nums", "1,2,4", "--tasks", "denoise", "--runs", "1")
    assert bad.returncode == 2 and "unknown task 'denoise'" in bad.stderr
