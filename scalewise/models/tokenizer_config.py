"""Settings of the tokenizer (``params.yaml: train_tokenizer.model``), checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalewise.core.config import ConfigError

# ----------------------------------------------------------------------------- config


@dataclass
class TokenizerConfig:
    """Architecture of the tokenizer. ``downsample`` must equal ``2 ** (len(ch_mult) - 1)``."""

    ch: int = 16
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    downsample: int = 4
    vocab_size: int = 512
    cvae: int = 16
    patch_nums: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 8])
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    beta: float = 0.25
    use_attn: bool = False
    in_channels: int = 1

    def __post_init__(self) -> None:
        self.ch_mult = [int(m) for m in self.ch_mult]
        self.patch_nums = [int(p) for p in self.patch_nums]
        if 2 ** (len(self.ch_mult) - 1) != self.downsample:
            raise ConfigError(
                f"downsample={self.downsample} does not match ch_mult={self.ch_mult}: "
                f"len(ch_mult)-1 downsamplings give {2 ** (len(self.ch_mult) - 1)}; "
                "change one of them so that downsample == 2**(len(ch_mult)-1)"
            )
        if not self.patch_nums or any(p <= 0 for p in self.patch_nums):
            raise ConfigError(f"patch_nums must be positive integers, got {self.patch_nums}")
        if any(b <= a for a, b in zip(self.patch_nums, self.patch_nums[1:])):
            raise ConfigError(f"patch_nums must be strictly increasing, got {self.patch_nums}")
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if not 0.0 <= self.quant_resi <= 1.0:
            raise ConfigError(f"quant_resi must lie in [0, 1], got {self.quant_resi}")
        if self.share_quant_resi < 1:
            raise ConfigError(f"share_quant_resi must be >= 1, got {self.share_quant_resi}")
        if self.vocab_size < 2 or self.cvae < 1 or self.ch < 1:
            raise ConfigError("vocab_size must be >= 2, cvae and ch >= 1")

    @property
    def latent_size(self) -> int:
        """H = W of the latent ``f`` (the last patch number)."""
        return self.patch_nums[-1]

    @property
    def num_tokens(self) -> int:
        """Total tokens over all scales, sum of p_k^2."""
        return sum(p * p for p in self.patch_nums)

    def check_image_size(self, image_size: int) -> None:
        """Raise a :class:`ConfigError` unless ``image_size / downsample == patch_nums[-1]``."""
        if image_size % self.downsample != 0:
            raise ConfigError(
                f"image_size={image_size} is not divisible by downsample={self.downsample}; "
                "choose an image_size that is a multiple of the downsample factor"
            )
        latent = image_size // self.downsample
        if self.patch_nums[-1] != latent:
            raise ConfigError(
                f"patch_nums={self.patch_nums} must end at the latent size "
                f"image_size/downsample = {image_size}/{self.downsample} = {latent}"
            )
