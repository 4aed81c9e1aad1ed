"""Mixup and CutMix toward class centers: timm's ``Mixup`` mixes the inputs, the targets stay the two samples' centers.

timm's ``Mixup`` also builds one-hot targets of ``B x n_classes``, exactly what LSC exists to avoid; here only the
inputs go through timm, and the objective is the λ-weighted sum of the two samples' losses::

    L_b = λ_b · L(z_b, C_{y_b}) + (1 - λ_b) · L(z_b, C_{y_p(b)})        p(b) = B - 1 - b (timm's pairing)

so a step gathers the batch's centers once and nothing grows with n_classes. For the cosine loss this is
``1 - |m_b| cos(z_b, m_b)`` with ``m_b = λ_b Ĉ_{y_b} + (1 - λ_b) Ĉ_{y_p(b)}``: the same optimum as training toward
the normalized mixed center ``m_b / |m_b|``, weighted by ``|m_b|``, and defined even where two centers are
antipodal (``m_b = 0``); docs/training.md compares the two on real images. Cross-entropy gets the same weighted sum
of its two terms, which equals timm's soft-target cross-entropy without label smoothing.
"""

from __future__ import annotations

import torch

__all__ = ["MIXUP_MODES", "CenterMixup"]

MIXUP_MODES = ("batch", "pair", "elem")


class CenterMixup:
    """Mixes a batch in place with timm's Mixup/CutMix; returns each sample's partner and weight λ.

    Args:
        mixup_alpha: Beta(α, α) of mixup (0: off).
        cutmix_alpha: Beta(α, α) of CutMix (0: off).
        prob: probability that a batch (or sample, or pair) is mixed at all.
        switch_prob: probability of CutMix instead of mixup when both are on.
        mode: ``batch`` (one λ per batch), ``pair`` or ``elem`` (one per pair / sample), as timm.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
    ) -> None:
        from timm.data import Mixup

        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"--mixup and --cutmix must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if not (0.0 <= prob <= 1.0 and 0.0 <= switch_prob <= 1.0):
            raise ValueError(f"--mixup-prob and --mixup-switch-prob must be in [0, 1], got {prob}, {switch_prob}")
        if mode not in MIXUP_MODES:
            raise ValueError(f"--mixup-mode must be one of {MIXUP_MODES}, got {mode!r}")
        self.mode = mode
        self.timm = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            mode=mode,
            label_smoothing=0.0,
            num_classes=0,  # its one-hot targets are never built
        )

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``x [B, C, H, W]`` in place: ``(partner [B] long, lam [B] float32)``. timm pairs sample ``b`` with
        ``B - 1 - b`` and needs an even batch; in an odd batch the last sample stays unmixed (its own partner,
        λ = 1). λ is drawn from NumPy's global generator (timm's), which checkpoints save and restore."""
        n = len(x) - len(x) % 2
        partner = torch.arange(len(x), device=x.device)
        lam = torch.ones(len(x), dtype=torch.float32, device=x.device)
        if n == 0:
            return partner, lam
        mix = {"batch": self.timm._mix_batch, "pair": self.timm._mix_pair, "elem": self.timm._mix_elem}[self.mode]
        lam[:n] = torch.as_tensor(mix(x[:n]), dtype=torch.float32).reshape(-1).to(x.device)
        partner[:n] = partner[:n].flip(0)
        return partner, lam
