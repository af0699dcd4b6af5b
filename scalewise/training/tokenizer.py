"""Training and evaluation loop of the multi-scale VQ-VAE (library: no params, no MLflow).

Training resumes from ``<state_dir>/last.pt`` when that file was written for the same
configuration and data (``run_key``); otherwise it starts fresh. The checkpoint is written
atomically every ``ckpt_every`` steps (keyed by config, data and the training code) and holds the model, optimiser, step, the RNG state of
batch sampling and the logged curve, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from scalewise.core.config import ConfigError, to_dict
from scalewise.core.images import to_unit
from scalewise.core.metrics import psnr
from scalewise.training.resume import Checkpointer, StepLog, run_key
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig


@dataclass
class TrainTokenizerConfig:
    """The ``train_tokenizer`` section of params.yaml."""

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    dead_code_every: int = 100
    dead_code_min_usage: float = 0.03
    log_every: int = 25
    ckpt_every: int = 250
    seed: int = 0
    device: str = "cpu"
    official: str | None = None  # path of the official release VQVAE: imported instead of trained

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``base_lr`` then cosine decay to 10% of it (step counts from 0)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a clear error if it is not available here."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} requested but CUDA is not available; use device: cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} requested but MPS is not available; use device: cpu")
    return device


@dataclass
class TrainResult:
    model: Tokenizer
    history: list[dict]  # one row per logged step
    resumed_from: int  # 0 when started fresh


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
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    code = [sys.modules[Tokenizer.__module__], sys.modules[__name__]]
    ckpt = Checkpointer(state_dir, run_key(to_dict(cfg), data_hash, code), model, opt, gen)
    ckpt_path = ckpt.path
    step, history = ckpt.restore(device)
    resumed_from = step

    data = images_u8  # kept as uint8 on the CPU; batches are converted on the fly
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train_tokenizer", disable=not progress)
    log = StepLog(cfg.log_every, cfg.steps, history, on_log, bar, show=("loss", "perplexity"))
    while step < cfg.steps:
        idx = torch.randint(data.shape[0], (cfg.batch_size,), generator=gen)
        x = to_unit(data[idx]).to(device)
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        recon, q = model(x)
        recon_mse = F.mse_loss(recon, x)
        loss = recon_mse + q.commit_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train_tokenizer: loss is {loss.item()} at step {step}; the last good checkpoint "
                f"({ckpt_path}) is kept. Lower train_tokenizer.lr or check the input images."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 0:
            # Codes start at tiny random values: seed them all from this batch's residuals.
            model.quantize.revive_dead_codes(float("inf"), generator=gen)
        elif cfg.dead_code_every > 0 and (step + 1) % cfg.dead_code_every == 0:
            model.quantize.revive_dead_codes(cfg.dead_code_min_usage, generator=gen)
        step += 1
        bar.update(1)
        row = {"loss": loss.item(), "recon_mse": recon_mse.item(), "commit_loss": q.commit_loss.item(),
               "perplexity": q.perplexity, "batch_usage": q.usage, "lr": lr}
        log.add(step, row)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            ckpt.save(step, history)
    bar.close()
    model.eval()
    return TrainResult(model=model, history=history, resumed_from=resumed_from)


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
