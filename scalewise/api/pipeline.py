"""A trained model in a user's hands: :class:`Pipeline` samples and restores PIL images.

    import scalewise
    pipe = scalewise.load(model="models/srdd.pt", tokenizer="models/tokenizer.pt")
    images = pipe.sample([3, 7], n=4)                          # 8 PIL images, 4 of class 3 then 4 of 7
    fixed = pipe.restore("photo.png", task="inpaint", mask="mask.png")  # at photo.png's own size

``scalewise sample`` and ``scalewise restore`` are this class behind flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from scalewise.api.fit import Placement, fit_square, paste_back
from scalewise.core.images import from_pil, open_image, to_pil, to_uint8
from scalewise.core.precision import autocast
from scalewise.models.heads import SamplingHeads
from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import ScaleTransformer

ImageInput = str | os.PathLike | Image.Image
GUIDANCE_SETTINGS = ("cfg", "alpha", "guide_from_scale", "grad_steps", "particles", "relax", "tau", "resample",
                     "resample_select", "resample_threshold", "resample_iters")  # over the preset's values


@dataclass
class RestoreRun:
    """One :meth:`Pipeline.restore_run`: the model-resolution tensors and the user-size images."""

    images: torch.Tensor  # (N, C, S, S) in [-1, 1], the model's resolution
    observation: torch.Tensor  # (1, C, S, S) in [-1, 1]: y as an image (unobserved pixels black)
    pil: list[Image.Image]  # N restorations at the input's size (times the factor for superres)
    placement: Placement
    sec_per_image: float
    method: str


class Pipeline:
    """A transformer and its tokenizer (and optionally its sampling heads) on one device.

    Build it with :func:`scalewise.load`. Images come back as PIL images (mode ``L`` or
    ``RGB``, the model's channels), 0..255.
    """

    def __init__(self, model: ScaleTransformer, tokenizer: Tokenizer, heads: SamplingHeads | None = None,
                 device: str | torch.device = "cpu", dtype: str = "fp32"):
        self.model, self.tokenizer, self.heads = model, tokenizer, heads
        self.device, self.dtype = torch.device(device), dtype

    @property
    def image_size(self) -> int:
        """The model's image side (pixels)."""
        return self.tokenizer.cfg.downsample * self.tokenizer.patch_nums[-1]

    @property
    def channels(self) -> int:
        return self.tokenizer.cfg.in_channels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of a sample."""
        return self.image_size, self.image_size, self.channels

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    # -- sampling

    def sample_tensors(self, classes: Sequence[int], n: int = 1, seed: int = 0, batch_size: int = 64,
                       cfg: float = 1.5, cfg_schedule: str = "linear", top_k: int = 0, top_p: float = 0.0,
                       temperature: float = 1.0, resample: str = "none", resample_threshold: float = 0.05,
                       resample_iters: int = 2, resample_use_cfg: bool = True, infer_mode: str = "baseline",
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples of each class in ``classes``: (images (len*n, C, S, S) in [-1, 1], labels).

        Labels run class by class (``n`` of the first, then ``n`` of the next); batch i of
        ``batch_size`` uses seed ``seed + i``. ``infer_mode`` other than ``baseline`` needs the
        heads (``scalewise.load(heads=...)``). ``progress`` shows one step per scale.
        """
        from tqdm import tqdm

        from scalewise.sampling.generate import Resample, generate

        if n < 1 or batch_size < 1:
            raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
        bad = [c for c in classes if not 0 <= int(c) < self.num_classes]
        if bad or not len(classes):
            raise ValueError(f"classes {list(classes)}: the model has {self.num_classes} classes "
                             f"(0..{self.num_classes - 1}); give at least one of them")
        if infer_mode != "baseline" and self.heads is None:
            raise ValueError(f"infer_mode={infer_mode!r} needs the model's sampling heads: "
                             "scalewise.load(..., heads='models/srdd_heads.pt')")
        labels = torch.tensor([int(c) for c in classes]).repeat_interleave(n)
        settings = Resample(kind=resample, threshold=resample_threshold, iters=resample_iters, use_cfg=resample_use_cfg)
        chunks = labels.split(batch_size)
        K = len(self.model.cfg.patch_nums)
        images = []
        with tqdm(total=len(chunks) * K, desc="sampling", unit="scale", disable=not progress) as bar:
            for i, chunk in enumerate(chunks):
                with autocast(self.device, self.dtype):
                    g = generate(self.model, self.tokenizer, chunk, cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k,
                                 top_p=top_p, temperature=temperature, seed=seed + i, resample=settings,
                                 infer_mode=infer_mode, heads=self.heads, on_scale_done=lambda si: bar.update())
                images.append(g.images.float().cpu())
        return torch.cat(images), labels

    def sample(self, classes: Sequence[int], n: int = 1, **settings: Any) -> list[Image.Image]:
        """``n`` PIL images of each class in ``classes`` (settings: :meth:`sample_tensors`)."""
        images, _ = self.sample_tensors(classes, n, **settings)
        return to_pil(images)

    def sample_arrays(self, labels: Sequence[int], seed: int = 0, **settings: Any) -> np.ndarray:
        """One sample per label as uint8 (N, H, W, C) (the MLflow model's output)."""
        images, _ = self.sample_tensors(list(labels), 1, seed=seed, **settings)
        return to_uint8(images).permute(0, 2, 3, 1).numpy()

    # -- restoration

    def restore_run(self, image: ImageInput, task: str, mask: ImageInput | np.ndarray | None = None,
                    method: str = "guided", num_samples: int = 1, keep_observed: bool = True,
                    factor: int = 4, mode: str = "area", keep: str = "left", kernel_size: int = 9,
                    sigma: float = 2.0, sigma_y: float = 0.05, preset: str = "default",
                    class_label: int | None = None, seed: int = 0, progress: bool = False,
                    **guidance: Any) -> RestoreRun:
        """Restore ``image`` (a path or a PIL image, any size): :meth:`restore` with the tensors too.

        The input's centre square is resized to what the task needs (the model's side, or side /
        ``factor`` for ``superres``), restored, and pasted back at the input's size (times
        ``factor`` for ``superres``). ``mask`` (inpaint): an image or bool array of the input's
        size, white / True = pixels to fill. With ``keep_observed`` the observed pixels
        (outside the inpainting mask, the kept part of an outpainting) are the input's own.
        ``guidance``: any of :data:`GUIDANCE_SETTINGS` over the ``preset`` (the README's table).
        """
        import torch.nn.functional as F

        from scalewise.posterior.guidance_config import guidance_config
        from scalewise.posterior.restoration import observation_image, restore
        from scalewise.posterior.user_task import build_user_task, keep_mask_from_png, observed_size

        unknown = sorted(set(guidance) - set(GUIDANCE_SETTINGS))
        if unknown:
            raise ValueError(f"unknown restore settings {unknown}; allowed: {list(GUIDANCE_SETTINGS)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if class_label is not None and not 0 <= class_label < self.num_classes:
            raise ValueError(f"class_label {class_label} is out of range: the model has {self.num_classes} "
                             f"classes (0..{self.num_classes - 1})")
        size, channels = self.image_size, self.channels
        side = observed_size(task, size, factor)
        original = _as_image(image, "image").convert("L" if channels == 1 else "RGB")
        fitted, place = fit_square(original, side)
        fill_HW = None
        keep_11SS = None
        if mask is not None:
            if task != "inpaint":
                raise ValueError(f"a mask only applies to task inpaint, not {task}")
            keep_11HW = keep_mask_from_png(_mask_u8(mask), (original.size[1], original.size[0]), _where(mask))
            fill_HW = keep_11HW[0, 0].numpy() == 0
            crop = keep_11HW[..., place.top:place.top + place.side, place.left:place.left + place.side]
            keep_11SS = crop if place.side == side else F.interpolate(crop, size=(side, side), mode="nearest")
        op, y = build_user_task(task, from_pil(fitted, channels), size, channels, keep_11SS, factor, mode, keep,
                                kernel_size, sigma)
        op = op if op.num_images is None else op.select([0] * num_samples)
        y_N = y.repeat(num_samples, 1, 1, 1).to(self.device)
        labels = None if class_label is None else torch.full((num_samples,), class_label, dtype=torch.long)
        if guidance.get("resample") == "simple" and guidance.get("resample_select") is None:
            guidance["resample_select"] = "threshold"  # simple resampling re-draws by threshold only
        values = {"preset": preset, **{k: v for k, v in guidance.items() if v is not None}}
        config = guidance_config(values, "restore settings", operator_kind=op.kind, operator_settings=op.settings)
        with autocast(self.device, self.dtype):
            res = restore(self.model, self.tokenizer, op, y_N, method, config, labels, batch_size=num_samples,
                          seed=seed, sigma_y=sigma_y, progress=progress)
        images = res.images.float().cpu()
        scale = factor if task == "superres" else 1
        keep_full = None
        if keep_observed and task == "inpaint":
            keep_full = ~fill_HW
        elif keep_observed and task == "outpaint":
            known = op.known_mask()[:1, :1].float().cpu()  # (1, 1, S, S), 1 = observed
            up = F.interpolate(known, size=(place.side, place.side), mode="nearest")[0, 0].numpy() > 0.5
            keep_full = np.zeros((original.size[1], original.size[0]), dtype=bool)
            keep_full[place.top:place.top + place.side, place.left:place.left + place.side] = up
        pil = [paste_back(original, im, place, scale, keep_full) for im in to_pil(images)]
        return RestoreRun(images, observation_image(op, y_N[:1].cpu()), pil, place, res.sec_per_image, method)

    def restore(self, image: ImageInput, task: str, mask: ImageInput | np.ndarray | None = None,
                **settings: Any) -> list[Image.Image]:
        """Restorations of ``image`` as PIL images of the input's size (see :meth:`restore_run`)."""
        return self.restore_run(image, task, mask, **settings).pil


def _where(value: Any) -> str:
    return f"--mask {value}" if isinstance(value, (str, os.PathLike)) else "mask"


def _as_image(value: ImageInput, what: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return open_image(value)
    raise TypeError(f"{what}: expected a path or a PIL image, got {type(value).__name__}")


def _mask_u8(mask: ImageInput | np.ndarray) -> torch.Tensor:
    """A mask as uint8 (1, 1, H, W), 255 = to fill: a bool / 0-1 array, or an image (white = fill)."""
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError(f"mask array must be (H, W), got shape {mask.shape}")
        array = (mask.astype(bool).astype(np.uint8) * 255) if mask.dtype == bool or mask.max() <= 1 else mask
        return torch.from_numpy(np.ascontiguousarray(array.astype(np.uint8)))[None, None]
    img = _as_image(mask, "mask").convert("L")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())[None, None]
