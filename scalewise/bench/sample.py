"""Speed / memory benchmarks of sampling and training (random weights are fine).

Timings are medians of ``runs`` repetitions after ``warmup`` runs; variants compared in one
command are timed interleaved (:func:`bench_sample_side_by_side`). Peak memory comes from
one more run after the timed ones (the RSS sampling thread would steal CPU time from them, up
to 20% on 2 cores): the largest resident set size sampled every few milliseconds on CPU, or
``torch.cuda.max_memory_allocated`` on CUDA. FLOPs count the transformer's matrix work
(projections, MLP, attention, head; AdaLN once per sample), the figure used for the
fraction of peak.
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from scalewise.core.allocator import freed_memory_kept
from scalewise.models.heads import HeadsConfig, SamplingHeads
from scalewise.models.masks import context_scales
from scalewise.core.precision import autocast, compile_transformer, weight_dtype
from scalewise.sampling.generate import generate
from scalewise.models.tokenizer import Tokenizer, TokenizerConfig
from scalewise.models.transformer import ScaleTransformer, TransformerConfig


@dataclass
class BenchModel:
    depth: int = 6
    width: int = 384
    heads: int = 6
    image_size: int = 128
    downsample: int = 16
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)
    vocab: int = 4096
    cvae: int = 32
    tokenizer_ch: int = 32
    num_classes: int = 1000
    channels: int = 3

    def tokenizer_config(self) -> TokenizerConfig:
        levels = self.downsample.bit_length()  # downsample = 2**(levels-1)
        ch_mult = [1, 1, 2, 2, 4, 4, 8][:levels]
        return TokenizerConfig(ch=self.tokenizer_ch, ch_mult=ch_mult, num_res_blocks=2, downsample=self.downsample,
                               vocab_size=self.vocab, cvae=self.cvae, patch_nums=list(self.patch_nums),
                               share_quant_resi=4, in_channels=self.channels, use_attn=True)

    def transformer_config(self, mask_kind: str) -> TransformerConfig:
        return TransformerConfig(depth=self.depth, width=self.width, heads=self.heads, vocab_size=self.vocab,
                                 cvae=self.cvae, patch_nums=list(self.patch_nums), num_classes=self.num_classes,
                                 mask_kind=mask_kind)


def sampling_flops(cfg: TransformerConfig, batch: int, cfg_on: bool) -> float:
    """Matrix FLOPs of one cached generation of ``batch`` images (x2 rows with CFG)."""
    rows = batch * (2 if cfg_on else 1)
    C, V, D = cfg.width, cfg.vocab_size, cfg.depth
    pn = cfg.patch_nums
    total = rows * D * 2 * C * 6 * C + rows * 2 * C * 2 * C  # AdaLN once per sample (blocks + head)
    for si, p in enumerate(pn):
        n = p * p
        ctx = sum(pn[j] ** 2 for j in context_scales(si, cfg.mask_kind))
        per_token = D * (2 * C * 3 * C + 2 * C * C + 2 * 2 * C * round(cfg.mlp_ratio * C) + 2 * 2 * ctx * C)
        # the head runs on the guided hidden state: `batch` rows, not `rows`
        total += rows * n * (per_token + 2 * cfg.cvae * C) + batch * n * 2 * C * V
    return float(total)


def decoder_flops(tokenizer: Tokenizer, batch: int) -> float:
    """Convolution FLOPs of decoding ``batch`` latents to images (counted with forward hooks)."""
    total = [0.0]

    def hook(mod: torch.nn.Conv2d, _inp, out: torch.Tensor) -> None:
        k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += 2.0 * k * out.numel()

    convs = [m for m in tokenizer.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        p = tokenizer.patch_nums[-1]
        param = next(tokenizer.parameters())
        with torch.no_grad():
            tokenizer.decoder(torch.zeros(1, tokenizer.cfg.cvae, p, p, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
    return total[0] * batch


def matmul_peak_gflops(device: str = "cpu", dtype: str = "fp32", size: int = 1024, repeats: int = 10) -> float:
    """Measured matrix-multiply throughput (GFLOP/s) of this device, threads and dtype: best of ``repeats``."""
    dev = torch.device(device)
    dt = torch.float32 if dtype == "fp32" else torch.bfloat16
    a = torch.randn(2 * size, size, device=dev, dtype=dt)
    b = torch.randn(size, size, device=dev, dtype=dt)
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats + 2):
        _sync(dev)
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > 3.0:  # an emulated dtype: a few runs tell enough
            break
    return 2.0 * 2 * size * size * size / best / 1e9


@contextmanager
def peak_rss(interval_s: float = 0.005) -> Iterator[dict]:
    """Track the process's peak RSS (bytes) while the block runs: ``result['peak']``."""
    import psutil

    proc = psutil.Process()
    result = {"peak": proc.memory_info().rss}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak"] = max(result["peak"], proc.memory_info().rss)
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(result["peak"], proc.memory_info().rss)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_peak(fn, device: torch.device) -> int:
    """Peak memory (bytes) of one more call of ``fn``: sampled RSS on CPU, max allocated on CUDA.

    Kept out of the timed runs: the RSS sampling thread would take CPU time from them.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device))
    with peak_rss() as mem:
        fn()
    return int(mem["peak"])


def bench_sample(spec: BenchModel, mask_kind: str, batch: int, cfg: float, runs: int = 5, warmup: int = 1,
                 device: str = "cpu", dtype: str = "fp32", seed: int = 0) -> dict:
    """One benchmark record of :func:`generate` for a mask kind and batch size."""
    return bench_sample_side_by_side(spec, [mask_kind], [batch], cfg, runs, warmup, device, dtype, seed)[0]


def bench_sample_side_by_side(spec: BenchModel, mask_kinds: list[str], batches: list[int], cfg: float,
                              runs: int = 5, warmup: int = 1, device: str = "cpu", dtype: str = "fp32",
                              seed: int = 0, compile: bool = False,
                              infer_modes: tuple[str, ...] = ("baseline",)) -> list[dict]:
    """Benchmark records of :func:`generate` for every (mask kind, batch size, infer mode), timed side by side.

    ``infer_modes``: ``baseline`` and / or ``guidance`` (the learned temperature / CFG heads,
    random weights; the policy modes need a masked-objective model: time them with the
    ``evaluate_heads`` stage).

    The timed runs are interleaved: round ``i`` times every combination once, starting at a
    different one each round, so slow phases of a shared machine and order effects (caches,
    allocator state) fall on all combinations alike and their ratios are fair.
    """
    dev = torch.device(device)
    autocast(dev, dtype)  # validates the name
    wd = weight_dtype(dtype)
    torch.manual_seed(seed)
    tok = Tokenizer(spec.tokenizer_config()).to(dev, wd).eval().channels_last_()
    bad = sorted(set(infer_modes) - {"baseline", "guidance"})
    if bad:
        raise ValueError(f"bench sample: infer modes {bad} are not benchmarked here; allowed: baseline, guidance")
    models, heads = {}, {}
    for kind in mask_kinds:
        torch.manual_seed(seed)  # the same random weights for every mask kind
        models[kind] = ScaleTransformer(spec.transformer_config(kind)).to(dev, wd).eval()
        if compile:
            if warmup < 1:
                raise ValueError("bench sample --compile needs --warmup >= 1 (the first run compiles)")
            compile_transformer(models[kind])
        heads[kind] = SamplingHeads(HeadsConfig(width=spec.width)).to(dev).eval()
        with torch.no_grad():  # away from exactly 1, so that the heads' arithmetic is what is timed
            for net in (heads[kind].tau, heads[kind].cfg_scale):
                net[2].bias.fill_(0.1)
    combos = [(kind, batch, mode) for kind in mask_kinds for batch in batches for mode in infer_modes]
    times: dict = {c: [] for c in combos}
    scale_times: dict = {c: [] for c in combos}
    decode_times: dict = {c: [] for c in combos}
    cache: dict = {}

    def once(combo: tuple[str, int, str], i: int, timing: dict | None = None):
        kind, batch, mode = combo
        with autocast(dev, dtype):
            return generate(models[kind], tok, torch.arange(batch) % spec.num_classes, cfg=cfg, seed=seed + i,
                            timing=timing, infer_mode=mode, heads=heads[kind] if mode != "baseline" else None)

    for i in range(warmup + runs):
        for j in range(len(combos)):
            combo = combos[(i + j) % len(combos)]
            timing: dict = {}
            _sync(dev)
            t0 = time.perf_counter()
            g = once(combo, i, timing)
            _sync(dev)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[combo].append(dt)
                scale_times[combo].append(timing["scale_s"])
                decode_times[combo].append(timing["decode_s"])
                cache[combo] = g.cache_bytes
    records = []
    dec_flops_1 = decoder_flops(tok, 1)
    for combo in combos:
        kind, batch, mode = combo
        model = models[kind]
        peak = measured_peak(lambda: once(combo, 0), dev)
        med = statistics.median(times[combo])
        flops = sampling_flops(model.cfg, batch, cfg > 0)
        dec_flops = dec_flops_1 * batch
        per_scale = [statistics.median(col) * 1e3 for col in zip(*scale_times[combo])]
        transformer_s = sum(per_scale) / 1e3
        records.append({
            "mask_kind": kind, "batch_size": batch, "infer_mode": mode, "dtype": dtype, "device": str(dev),
            "threads": torch.get_num_threads(), "runs": runs, "interleaved_with": len(combos), "compiled": compile,
            "images_per_s": batch / med, "ms_per_image": med * 1e3 / batch, "s_per_batch": med,
            "per_scale_ms": per_scale, "decode_ms": statistics.median(decode_times[combo]) * 1e3,
            "peak_memory_bytes": int(peak), "cache_bytes": int(cache[combo]),
            "transformer_gflop": flops / 1e9, "transformer_gflop_per_s": flops / 1e9 / transformer_s,
            "decoder_gflop": dec_flops / 1e9, "total_gflop": (flops + dec_flops) / 1e9,
            "total_gflop_per_s": (flops + dec_flops) / 1e9 / med,
            "keep_freed_memory": freed_memory_kept(),
            "tokens": model.cfg.num_tokens, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        })
    return records


def bench_train(spec: BenchModel, mask_kind: str, batch: int, runs: int = 5, warmup: int = 1,
                device: str = "cpu", dtype: str = "fp32", seed: int = 0) -> dict:
    """One benchmark record of a training step (forward + backward + AdamW) on random tokens."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    autocast(dev, dtype)
    if dtype == "bf16":
        raise ValueError("bench train supports fp32 and bf16-autocast (mixed precision), not bf16 weights")
    model = ScaleTransformer(spec.transformer_config(mask_kind)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    L = model.cfg.num_tokens
    x = torch.randn(batch, L - model.first_l, spec.cvae, device=dev)
    tokens = torch.randint(0, spec.vocab, (batch, L), device=dev)
    labels = torch.arange(batch, device=dev) % spec.num_classes

    def step() -> None:
        with autocast(dev, dtype):
            logits = model(labels, x)
        # flat (rows, V) logits: cross-entropy over a transposed (B, V, L) view is ~7% slower on CPU
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(warmup + runs):
        _sync(dev)
        t0 = time.perf_counter()
        step()
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = measured_peak(step, dev)
    med = statistics.median(times)
    return {"mask_kind": mask_kind, "batch_size": batch, "dtype": dtype, "device": str(dev),
            "threads": torch.get_num_threads(), "runs": runs, "s_per_step": med,
            "tokens_per_s": batch * L / med, "peak_memory_bytes": peak}
