"""Generation with a trained transformer + tokenizer: CFG, top-k/top-p/temperature, KV cache,
and token resampling.

Cache per mask kind (what a query of scale k needs, :func:`masks.context_scales`):
``causal`` keeps every earlier scale's keys/values, ``markov`` keeps nothing (one forward over
the scale's own tokens), ``markov_prev`` keeps only the previous scale. Conditional and
unconditional (null-class) halves share one batched forward; each block's AdaLN modulation is
computed once per sample before the first scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scalewise.models.tokenizer import Tokenizer
from scalewise.models.transformer import KVSlot, ScaleTransformer

CFG_SCHEDULES = ("linear", "constant")
RESAMPLE_KINDS = ("none", "simple", "masked")


# ----------------------------------------------------------------------------- pure helpers


def cfg_scale(cfg: float, si: int, num_scales: int, schedule: str = "linear") -> float:
    """Guidance weight t of scale ``si``: ``cfg * si/(K-1)`` (linear, VAR) or ``cfg`` (constant)."""
    if schedule == "constant":
        return float(cfg)
    if schedule == "linear":
        return float(cfg) * (si / (num_scales - 1) if num_scales > 1 else 1.0)
    raise ValueError(f"unknown cfg_schedule {schedule!r}; allowed: {list(CFG_SCHEDULES)}")


def combine_cfg(x_2Bl_: torch.Tensor, t: float) -> torch.Tensor:
    """``(1 + t) * cond - t * uncond`` from stacked [cond; uncond] rows (2B, l, ...) -> (B, l, ...).

    Applied to logits, or (equivalently, the head being linear) to the head's input.
    """
    cond, uncond = x_2Bl_.chunk(2)
    return cond * (1 + t) - uncond * t


def filter_logits(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set with cumulative prob >= ``top_p``.

    ``top_k=0`` and ``top_p=0`` (or 1) switch the filters off. The top token is always kept.
    """
    out = logits_BlV
    V = out.shape[-1]
    if 0 < top_k < V:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p  # mass before this token already >= p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def check_sampling_args(cfg: float, top_k: int, top_p: float, temperature: float) -> None:
    """Raise ValueError naming the argument and its allowed range."""
    if cfg < 0:
        raise ValueError(f"cfg must be >= 0, got {cfg}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not (top_p == 0.0 or 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must lie in (0, 1] (or 0 = off), got {top_p}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def draw(probs_BlV: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per position from ``probs`` (B, l, V) -> int64 (B, l).

    Inverse-CDF sampling: one uniform number per position and a binary search in the
    cumulative distribution (``torch.multinomial`` draws V exponentials per position).
    """
    B, l, V = probs_BlV.shape
    cdf = probs_BlV.float().cumsum(-1)  # (B, l, V)
    u = torch.rand(B, l, 1, generator=generator, device=probs_BlV.device) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return idx.clamp_(max=V - 1)


@dataclass
class Resample:
    """Token resampling after each scale's draw.

    ``simple``: tokens whose probability is below ``threshold`` are re-drawn from the same
    distribution, ``iters`` times. ``masked``: they are re-masked and re-predicted from the
    confident tokens of the scale (needs a model trained with ``masked_objective``), ``iters``
    times, with CFG (``use_cfg``) or the conditional logits only.
    """

    kind: str = "none"
    threshold: float = 0.05
    iters: int = 2
    use_cfg: bool = True
    min_scale: int = 1  # scales before this (0-based) are not resampled

    def __post_init__(self) -> None:
        if self.kind not in RESAMPLE_KINDS:
            raise ValueError(f"unknown resample kind {self.kind!r}; allowed: {list(RESAMPLE_KINDS)}")
        if not 0.0 <= self.threshold <= 1.0 or self.iters < 0:
            raise ValueError("resample threshold must lie in [0, 1] and iters be >= 0")


def simple_resample(probs_BlV: torch.Tensor, tokens_Bl: torch.Tensor, threshold: float, iters: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Re-draw tokens whose probability < ``threshold`` from ``probs``; returns (tokens, iterations run)."""
    tokens = tokens_Bl.clone()
    done = 0
    for _ in range(iters):
        p_tok = probs_BlV.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        low = p_tok < threshold
        if not bool(low.any()):
            break
        tokens = torch.where(low, draw(probs_BlV, generator), tokens)
        done += 1
    return tokens, done


# ----------------------------------------------------------------------------- generation


@dataclass
class Generation:
    images: torch.Tensor  # (B, C, H, W) in [-1, 1]
    tokens: list[torch.Tensor]  # K index maps (B, p_k, p_k)
    logits: list[torch.Tensor] = field(default_factory=list)  # CFG-combined first-pass logits (B, p_k^2, V)
    resample_iters: list[int] = field(default_factory=list)  # refinement iterations run per scale
    cache_bytes: int = 0


class ScaleRunner:
    """Runs the transformer one scale at a time with the cache the mask kind needs."""

    def __init__(self, model: ScaleTransformer, cond_BD: torch.Tensor):
        self.model = model
        self.kind = model.cfg.mask_kind
        self.pn = model.cfg.patch_nums
        self.slices = model.scale_slices()
        self.cond_BD = cond_BD
        self.mods = model.block_modulations(cond_BD)  # once per sample
        self.head_mod = model.head_nm.modulation(cond_BD)
        B, H, hd = cond_BD.shape[0], model.cfg.heads, model.cfg.width // model.cfg.heads
        if self.kind == "causal":
            capacity = model.cfg.num_tokens
        elif self.kind == "markov_prev":
            capacity = max(a * a + b * b for a, b in zip([0] + self.pn[:-1], self.pn))
        else:
            capacity = 0
        dev = cond_BD.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else cond_BD.dtype
        self.slots = [KVSlot(B, H, capacity, hd, dtype, cond_BD.device) for _ in model.blocks] if capacity else None

    @property
    def cache_bytes(self) -> int:
        return sum(s.nbytes for s in self.slots) if self.slots else 0

    def _place(self, si: int, frozen: bool) -> None:
        if not self.slots:
            return
        if self.kind == "causal":  # every earlier scale, at its place in the sequence
            read_from, write_at = 0, self.slices[si].start
        else:  # markov_prev: the previous scale is kept at [0, n_prev)
            read_from, write_at = 0, (self.pn[si - 1] ** 2 if si > 0 else 0)
        for slot in self.slots:
            slot.read_from, slot.write_at, slot.frozen = read_from, write_at, frozen

    def _shift_prev(self, si: int) -> None:
        """markov_prev: after scale si, its keys/values become the 'previous scale' at [0, n)."""
        if self.kind != "markov_prev" or not self.slots:
            return
        start = self.pn[si - 1] ** 2 if si > 0 else 0
        n = self.pn[si] ** 2
        for slot in self.slots:
            slot.k[:, :, :n] = slot.k[:, :, start:start + n].clone()
            slot.v[:, :, :n] = slot.v[:, :, start:start + n].clone()

    def logits(self, h_BnC: torch.Tensor, si: int, t: float | None = None, refine: bool = False) -> torch.Tensor:
        """Logits of scale ``si`` given its input embeddings (B', n, C).

        With ``t`` (CFG on, rows = [cond; uncond]) the guided logits (B'/2, n, V) are returned.
        The head is linear, so guiding its input, ``head((1+t) h_c - t h_u)``, equals guiding
        its output and halves the head's work. ``t=None``: raw logits of every row (B', n, V).
        """
        self._place(si, frozen=refine)
        for i, blk in enumerate(self.model.blocks):
            h_BnC = blk(h_BnC, self.mods[i], None, self.slots[i] if self.slots else None)
        h_BnC = self.model.head_nm(h_BnC, self.head_mod)
        if t is not None:
            h_BnC = combine_cfg(h_BnC, t)
        return self.model.head(h_BnC).float()

    def finish_scale(self, si: int) -> None:
        self._shift_prev(si)


def advance_scale(model: ScaleTransformer, tokenizer: Tokenizer, cond_BD: torch.Tensor, si: int,
                  f_hat_BChw: torch.Tensor, idx_Bhw: torch.Tensor, use_cfg: bool,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Add scale ``si``'s sampled tokens (B, p, p) to ``f_hat`` (B, Cvae, H, W).

    Returns the new ``f_hat`` and the next scale's input embeddings (B', n, C), rows doubled
    for the null class when ``use_cfg``; None after the last scale.
    """
    f_hat_BChw, next_BChw = tokenizer.next_scale_input(si, f_hat_BChw, tokenizer.quantize.embed(idx_Bhw))
    if si + 1 >= len(model.cfg.patch_nums):
        return f_hat_BChw, None
    x_BlCv = next_BChw.flatten(2).transpose(1, 2)  # (B, n, Cvae)
    if use_cfg:
        x_BlCv = x_BlCv.repeat(2, 1, 1)
    return f_hat_BChw, model.embed_inputs(cond_BD, x_BlCv, model.scale_slices()[si + 1])


@torch.no_grad()
def generate(
    model: ScaleTransformer,
    tokenizer: Tokenizer,
    labels: torch.Tensor | list[int],
    cfg: float = 1.5,
    cfg_schedule: str = "linear",
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: int = 0,
    resample: Resample | None = None,
    return_logits: bool = False,
    timing: dict | None = None,
) -> Generation:
    """Sample images of the given classes, scale by scale.

    Args:
        labels: class indices (B,) in [0, num_classes).
        cfg: guidance strength (0 = off: no unconditional half is run).
        cfg_schedule: ``linear`` (t = cfg * k/(K-1), VAR) or ``constant``.
        top_k, top_p, temperature: sampling filters (0 = off for top_k/top_p).
        seed: the whole draw is deterministic for a seed on a given device.
        resample: optional :class:`Resample`.
        timing: if a dict is given, it receives ``scale_s`` (seconds per scale, transformer
            + sampling + next input) and ``decode_s`` (final decoding).
    Returns: a :class:`Generation` (images in [-1, 1], (B, C, H, W)).
    """
    check_sampling_args(cfg, top_k, top_p, temperature)
    resample = resample or Resample()
    if resample.kind == "masked" and not model.cfg.masked_objective:
        raise ValueError("masked resampling needs a model trained with masked_objective: true")
    ours = (list(model.cfg.patch_nums), model.cfg.vocab_size, model.cfg.cvae)
    theirs = (list(tokenizer.patch_nums), tokenizer.cfg.vocab_size, tokenizer.cfg.cvae)
    if ours != theirs:
        raise ValueError(
            f"transformer (patch_nums, V, Cvae) = {ours} does not match the tokenizer's {theirs}: "
            "use the tokenizer the transformer was trained with"
        )
    device = next(model.parameters()).device
    labels_B = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
    if labels_B.numel() and (int(labels_B.min()) < 0 or int(labels_B.max()) >= model.num_classes):
        raise ValueError(f"class labels must lie in [0, {model.num_classes - 1}], got {labels_B.tolist()}")
    B, K = labels_B.shape[0], len(model.cfg.patch_nums)
    use_cfg = cfg > 0
    gen = torch.Generator(device=device).manual_seed(seed)

    all_labels = torch.cat((labels_B, torch.full_like(labels_B, model.num_classes))) if use_cfg else labels_B
    cond_BD = model.cond(all_labels)
    runner = ScaleRunner(model, cond_BD)
    H = tokenizer.patch_nums[-1]
    f_hat = cond_BD.new_zeros(B, tokenizer.cfg.cvae, H, H)
    h = model.embed_inputs(cond_BD, None, model.scale_slices()[0])
    out = Generation(images=None, tokens=[])  # type: ignore[arg-type]
    clock = _Clock(device) if timing is not None else None
    for si, p in enumerate(model.cfg.patch_nums):
        base = h
        if model.cfg.masked_objective:
            h = base + model.mask_embed
        t = cfg_scale(cfg, si, K, cfg_schedule)
        logits = runner.logits(h, si, t if use_cfg else None)
        if return_logits:
            out.logits.append(logits)
        probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
        tokens = draw(probs, gen)
        iters = 0
        if resample.kind == "simple" and si >= resample.min_scale:
            tokens, iters = simple_resample(probs, tokens, resample.threshold, resample.iters, gen)
        elif resample.kind == "masked" and si >= resample.min_scale:
            for _ in range(resample.iters):
                p_tok = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
                low = p_tok < resample.threshold
                if not bool(low.any()):
                    break
                revealed = ~low
                tok2, rev2 = (tokens.repeat(2, 1), revealed.repeat(2, 1)) if use_cfg else (tokens, revealed)
                guided = use_cfg and resample.use_cfg
                logits2 = runner.logits(base + model.reveal_embed(tok2, rev2), si, t if guided else None, refine=True)
                logits2 = logits2[:B]  # unguided refinement: the conditional rows
                probs2 = filter_logits(logits2 / temperature, top_k, top_p).softmax(-1)
                tokens = torch.where(low, draw(probs2, gen), tokens)
                probs = torch.where(low.unsqueeze(-1), probs2, probs)
                iters += 1
        out.resample_iters.append(iters)
        runner.finish_scale(si)
        idx_Bhw = tokens.view(B, p, p)
        out.tokens.append(idx_Bhw)
        f_hat, h = advance_scale(model, tokenizer, cond_BD, si, f_hat, idx_Bhw, use_cfg)
        if clock is not None:
            clock.lap()
    out.images = tokenizer.f_to_img(f_hat)
    out.cache_bytes = runner.cache_bytes
    if clock is not None:
        clock.lap()
        timing["scale_s"], timing["decode_s"] = clock.laps[:-1], clock.laps[-1]
    return out


class _Clock:
    """Lap timer that synchronises CUDA before reading the time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.laps: list[float] = []
        self._last = self._now()

    def _now(self) -> float:
        import time

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self) -> None:
        now = self._now()
        self.laps.append(now - self._last)
        self._last = now
