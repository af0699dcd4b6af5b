"""Training and evaluation of the multi-scale VQ-VAE tokenizer (library: no params, no MLflow).

Training runs :func:`scalewise.training.loop.fit` and resumes from ``<state_dir>/last.pt`` (see
:mod:`scalewise.training.resume`): the checkpoint holds the model, optimiser, step, the RNG of
batch sampling and dead-code revival, and the logged curve, so a resumed run continues exactly
where it stopped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from scalewise.core.config import ConfigError
from scalewise.core.device import resolve_device
from scalewise.core.images import to_unit
from scalewise.core.metrics import psnr
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.training import loop, optim, schedule
from scalewise.training.loop import Report, Schedule, StepOut, TrainResult, fit
from scalewise.training.resume import Checkpointer, code_of, run_key
from scalewise.training.settings import LoggedSettings, Rule, at_least


@dataclass
class TrainTokenizerConfig(LoggedSettings):
    """The ``train_tokenizer`` section of params.yaml."""

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    steps: int = 2000
    lr: float = 2e-3
    ckpt_every: int = 250
    dead_code_every: int = 100  # steps between dead-code re-initialisations (0 = off)
    dead_code_min_usage: float = 0.03  # EMA uses per step below which a code is re-initialised
    official: str | None = None  # path of the official release VQVAE: imported instead of trained

    SECTION: ClassVar[str] = "train_tokenizer"
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = LoggedSettings.NOT_IN_KEY + ("official",)

    def rules(self) -> list[Rule]:
        return super().rules() + [at_least("dead_code_every", 0), at_least("dead_code_min_usage", 0.0, "number")]


def train_tokenizer(
    cfg: TrainTokenizerConfig,
    images_u8: torch.Tensor,
    data_hash: str,
    state_dir: str | Path,
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the tokenizer on uint8 images (N, C, H, W); resumable via ``state_dir``.

    ``on_log(step, row)`` is called every ``log_every`` steps with the averaged metrics
    ``loss``, ``recon_mse``, ``commit_loss``, ``perplexity``, ``batch_usage``, ``lr``.

    Raises:
        FloatingPointError: the loss became NaN/inf (the last checkpoint is kept).
    """
    device = resolve_device(cfg.device)
    model_cfg = cfg.model
    model_cfg.check_image_size(images_u8.shape[-1])
    if images_u8.shape[1] != model_cfg.in_channels:
        raise ConfigError(
            f"images have {images_u8.shape[1]} channels but the model expects "
            f"in_channels={model_cfg.in_channels}"
        )
    torch.manual_seed(cfg.seed)
    model = Tokenizer(model_cfg).to(device)
    opt = optim.adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    code = code_of(model, sys.modules[__name__], loop, optim, schedule)
    ckpt = Checkpointer(state_dir, run_key(cfg.key_settings(), data_hash, code), model, opt, gen, cfg.ckpt_every)

    def step_fn(step: int) -> StepOut:
        # kept as uint8 on the CPU; each batch is converted on the fly
        idx = torch.randint(images_u8.shape[0], (cfg.batch_size,), generator=gen)
        x = to_unit(images_u8[idx]).to(device)
        recon, q = model(x)
        recon_mse = F.mse_loss(recon, x)
        loss = recon_mse + q.commit_loss
        return StepOut(loss, lambda values: {
            "loss": loss.item(), "recon_mse": recon_mse.item(), "commit_loss": q.commit_loss.item(),
            "perplexity": q.perplexity, "batch_usage": q.usage, **values})

    def revive(step: int) -> None:
        if step == 0:
            # Codes start at tiny random values: seed them all from this batch's residuals.
            model.quantize.revive_dead_codes(float("inf"), generator=gen)
        elif cfg.dead_code_every > 0 and (step + 1) % cfg.dead_code_every == 0:
            model.quantize.revive_dead_codes(cfg.dead_code_min_usage, generator=gen)

    report = Report("train_tokenizer", "Lower train_tokenizer.lr or check the input images.", cfg.log_every,
                    ("loss", "perplexity"), on_log, progress)
    return fit(model, opt, Schedule(cfg.steps, cfg.lr, cfg.warmup_steps), step_fn, report, ckpt, after_step=revive)


@torch.no_grad()
def evaluate_tokenizer(model: Tokenizer, images_u8: torch.Tensor, batch_size: int = 256) -> dict:
    """Test metrics of a tokenizer on uint8 images (N, C, H, W).

    Returns ``psnr`` (dB, mean per-image PSNR decoding all scales), ``psnr_by_scales``
    (list of K values: decoding the first k scales, k = 1..K), ``codebook_usage`` (fraction
    of the V codes used at least once over all scales of the set, 0..1) and ``perplexity``.
    """
    model.eval()
    device = next(model.parameters()).device
    K, V = len(model.patch_nums), model.cfg.vocab_size
    psnr_sum = torch.zeros(K, dtype=torch.float64)
    counts_V = torch.zeros(V, dtype=torch.float64)
    for start in range(0, images_u8.shape[0], batch_size):
        x = to_unit(images_u8[start:start + batch_size]).to(device)
        idx_maps = model.encode(x)
        for idx in idx_maps:
            counts_V += torch.bincount(idx.flatten().cpu(), minlength=V).double()
        H = model.patch_nums[-1]
        f_hat = x.new_zeros(x.shape[0], model.cfg.cvae, H, H)
        for k, idx in enumerate(idx_maps):
            f_hat = model.quantize.add_scale(f_hat, k, model.quantize.embed(idx))
            psnr_sum[k] += psnr(model.f_to_img(f_hat), x).double().clamp_max(100).sum().cpu()
    by_scales = (psnr_sum / images_u8.shape[0]).tolist()
    probs = counts_V / counts_V.sum()
    return {
        "psnr": by_scales[-1],
        "psnr_by_scales": by_scales,
        "codebook_usage": float((counts_V > 0).double().mean()),
        "perplexity": float(torch.exp(-(probs * (probs + 1e-12).log()).sum())),
    }
