"""How images become model inputs: the preprocessing a model expects (:class:`Preprocess`, from timm's data config or
a trained student's record) and the training augmentation (:class:`Augment`, timm's transforms), with the small
image helpers both use."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .digits import DIGITS_IMG_SIZE, is_digits

__all__ = ["NO_AUGMENT", "Augment", "Preprocess", "fix_timm_posterize", "random_shift", "resolve_preprocess", "to_pil"]


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs (recorded in every output)."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_preprocess(
    model: torch.nn.Module,
    data: str,
    img_size: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Preprocess:
    """The model's pretrained data config (timm) or, for a trained student, the preprocessing it was trained
    with; overridden by the given values. Digits default to 32 px."""
    from timm.data import resolve_data_config

    run = getattr(model, "preprocess", None)  # a trained student knows how its inputs were made
    if isinstance(run, dict):
        return Preprocess(
            img_size=int(img_size or run["img_size"]),
            mean=tuple(mean or run["mean"]),
            std=tuple(std or run["std"]),
            interpolation=run.get("interpolation", "bilinear"),
            crop_pct=float(run.get("crop_pct", 1.0)),
        )
    cfg = resolve_data_config({}, model=model)
    size = img_size or (DIGITS_IMG_SIZE if is_digits(data) else int(cfg["input_size"][-1]))
    return Preprocess(
        img_size=int(size),
        mean=tuple(float(v) for v in (mean or cfg["mean"])),
        std=tuple(float(v) for v in (std or cfg["std"])),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=1.0 if is_digits(data) else float(cfg.get("crop_pct", 1.0)),
    )


class Augment(NamedTuple):
    """Training augmentation, through timm's transforms.

    ``policy``: ``none``; ``light`` (image files: timm's training transform, random resized crop + flip + color
    jitter; digits: random shifts of up to 1/8 of the image); ``randaugment`` (``light`` plus timm's
    ``rand-m9-mstd0.5-inc1``); or any timm ``auto_augment`` string (``rand-m7-n3``, ``augmix-m5``, ``original``,
    ``3a``, ``trivial``...). ``hflip``, ``color_jitter``, ``re_prob`` (random erasing) and ``scale`` (the random
    resized crop's area range) are timm's arguments of the same names (digits under ``light`` take only shifts).
    ``scale=None``: timm's ``(0.08, 1.0)`` for image files, ``(0.5, 1.0)`` for the 8x8 digits.
    """

    policy: str = "none"
    hflip: float = 0.5
    color_jitter: float = 0.4
    re_prob: float = 0.0
    scale: tuple[float, float] | None = None

    @property
    def active(self) -> bool:
        return self.policy != "none"

    @property
    def auto_augment(self) -> str | None:
        return AUG_PRESETS.get(self.policy, self.policy)

    def check(self) -> Augment:
        if self.policy not in AUG_PRESETS and not self.policy.startswith(TIMM_AUTO_AUGMENT):
            raise ValueError(
                f"--aug {self.policy!r}: use none, light, randaugment or a timm auto_augment string "
                f"(one starting with {', '.join(TIMM_AUTO_AUGMENT)})"
            )
        for name in ("hflip", "re_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a probability in [0, 1], got {getattr(self, name)}"
                )
        if self.color_jitter < 0:
            raise ValueError(f"--color-jitter must be >= 0, got {self.color_jitter}")
        if self.scale is not None and not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"--scale must be two area fractions 0 < MIN <= MAX <= 1, got {self.scale}")
        if self.auto_augment is not None:
            from timm.data import create_transform

            fix_timm_posterize()
            try:  # timm parses the policy string when it builds the transform
                create_transform(32, is_training=True, auto_augment=self.auto_augment)
            except Exception as exc:
                raise ValueError(f"--aug {self.policy!r}: timm cannot build it ({exc})") from None
        return self


AUG_PRESETS: dict[str, str | None] = {"none": None, "light": None, "randaugment": "rand-m9-mstd0.5-inc1"}
TIMM_AUTO_AUGMENT = ("rand", "augmix", "original", "v0", "3a", "trivial", "ta_wide")
NO_AUGMENT = Augment()


def _posterize(img, bits_to_keep: int, **kwargs):
    """timm's posterize, where 0 bits gives the black image older Pillow gave: timm's RandAugment asks for 0 bits at
    its strongest levels (``rand-m9-mstd0.5-inc1`` reaches them), which Pillow 13 rejects with an error."""
    from PIL import Image
    from timm.data.auto_augment import posterize

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def fix_timm_posterize() -> None:
    """Point timm's posterize operations at :func:`_posterize` (before any transform is built; idempotent)."""
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        if auto_augment.NAME_TO_OP.get(name) is auto_augment.posterize:
            auto_augment.NAME_TO_OP[name] = _posterize


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift an image ``[C, H, W]`` by up to ``pad`` pixels each way (zero fill), drawn from torch's generator."""
    size = x.shape[-1]
    a, b = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    return F.pad(x, (pad, pad, pad, pad))[:, a : a + size, b : b + size]


def to_pil(x: torch.Tensor):
    from PIL import Image

    return Image.fromarray(x.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
