"""The Python API: ``scalewise.load(...)`` -> a pipeline that samples and restores PIL images,
and the pure fit / paste-back functions behind restoring at the input's own size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scalewise.api.fit import fit_mask, fit_square, paste_back
from swtest import TINY_MODEL

SIZE = 16  # TINY_MODEL: downsample 4, last patch 4


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from scalewise.models.checkpoints import save_model
    from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
    from scalewise.models.transformer import ScaleTransformer, TransformerConfig

    d = tmp_path_factory.mktemp("api")
    torch.manual_seed(0)
    save_model(d / "tokenizer.pt", Tokenizer(TokenizerConfig(**TINY_MODEL)))
    save_model(d / "srdd.pt", ScaleTransformer(TransformerConfig(depth=1, width=32, heads=2, vocab_size=64, cvae=8,
                                                                 patch_nums=[1, 2, 3, 4], num_classes=5,
                                                                 mask_kind="markov", masked_objective=True)))
    return d


def test_three_lines_sample_pil_images_reproducibly(model_files):
    import scalewise

    pipe = scalewise.load(model=model_files / "srdd.pt", tokenizer=model_files / "tokenizer.pt")
    imgs = pipe.sample([3], n=2)
    assert len(imgs) == 2 and all(isinstance(i, Image.Image) for i in imgs)
    assert imgs[0].size == (SIZE, SIZE) and imgs[0].mode == "L"
    again = pipe.sample([3], n=2)
    assert [np.asarray(i).tobytes() for i in imgs] == [np.asarray(i).tobytes() for i in again]  # seeded
    other = pipe.sample([3], n=2, seed=1)
    assert any(np.asarray(a).tobytes() != np.asarray(b).tobytes() for a, b in zip(imgs, other))
    # the tokenizer defaults to the one next to the model file; the same settings give the same pixels
    same = scalewise.load(model=model_files / "srdd.pt").sample([3], n=2)
    assert np.asarray(same[1]).tobytes() == np.asarray(imgs[1]).tobytes()
    with pytest.raises(ValueError, match=r"the model has 5 classes \(0..4\)"):
        pipe.sample([7])
    with pytest.raises(ValueError, match="needs the model's sampling heads"):
        pipe.sample([1], infer_mode="policy")


def test_restore_returns_images_at_the_inputs_own_size_keeping_the_observed_pixels(model_files):
    import scalewise

    pipe = scalewise.load(model=model_files / "srdd.pt")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8))  # 56 x 40, not the model's 16 x 16
    fill = np.zeros((40, 56), bool)
    fill[12:28, 20:36] = True
    out = pipe.restore(photo, task="inpaint", mask=fill, num_samples=2, grad_steps=1, guide_from_scale=2)
    assert len(out) == 2 and out[0].size == photo.size
    assert np.array_equal(np.asarray(out[0])[~fill], np.asarray(photo)[~fill])  # observed pixels are the input's
    assert not np.array_equal(np.asarray(out[0])[fill], np.asarray(photo)[fill])  # the hole is filled
    free = pipe.restore(photo, task="inpaint", mask=fill, keep_observed=False, grad_steps=1, guide_from_scale=2)
    assert not np.array_equal(np.asarray(free[0])[~fill], np.asarray(photo)[~fill])
    small = photo.resize((14, 10))
    sr = pipe.restore(small, task="superres", factor=4, grad_steps=1, guide_from_scale=2)
    assert sr[0].size == (56, 40)  # the input's size times the factor
    out = pipe.restore(photo, task="outpaint", keep="left", grad_steps=1, guide_from_scale=2)
    # the kept left half of the centre square is the input's own
    assert np.array_equal(np.asarray(out[0])[:, 8:8 + 20], np.asarray(photo)[:, 8:8 + 20])
    with pytest.raises(ValueError, match="unknown restore settings"):
        pipe.restore(photo, task="deblur", alhpa=1.0)
    with pytest.raises(ValueError, match="a mask only applies to task inpaint"):
        pipe.restore(photo, task="deblur", mask=fill)


def test_load_errors_name_what_is_wrong(model_files, tmp_path):
    import scalewise

    with pytest.raises(FileNotFoundError, match="tokenizer .*no such model file"):
        scalewise.load(model=model_files / "srdd.pt", tokenizer=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="give both official_vae and official_var"):
        scalewise.load(official_vae=tmp_path / "vae.pth")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            scalewise.load(model=model_files / "srdd.pt", device="cuda")


def test_fit_square_and_paste_back_round_trip_the_crop():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8), "RGB")
    square, place = fit_square(image, 10)
    assert square.size == (10, 10) and (place.top, place.left, place.side) == (0, 10, 30)
    same, _ = fit_square(image.crop(place.box()), 30)
    assert np.array_equal(np.asarray(same), np.asarray(image.crop(place.box())))  # no resize at its own size
    pasted = paste_back(image, Image.new("RGB", (10, 10), (255, 0, 0)), place)
    arr = np.asarray(pasted)
    assert pasted.size == image.size and (arr[:, 10:40] == (255, 0, 0)).all()
    assert np.array_equal(arr[:, :10], np.asarray(image)[:, :10]) and np.array_equal(arr[:, 40:], np.asarray(image)[:, 40:])
    keep = np.zeros((30, 50), bool)
    keep[:, 10:20] = True
    kept = np.asarray(paste_back(image, Image.new("RGB", (10, 10)), place, keep_HW=keep))
    assert np.array_equal(kept[:, 10:20], np.asarray(image)[:, 10:20]) and (kept[:, 20:40] == 0).all()
    up = paste_back(image, Image.new("RGB", (10, 10)), place, scale=2)
    assert up.size == (100, 60) and (np.asarray(up)[:, 20:80] == 0).all()
    fill = np.zeros((30, 50), bool)
    fill[:15, 10:25] = True
    assert fit_mask(fill, place, 10)[:5, :5].all() and not fit_mask(fill, place, 10)[5:, 5:].any()
