"""A bijective keyed permutation of ``[0, size)``, computed per index in both directions.

Shuffled systems (the paper's A_nr) need "class c gets vector perm(c)" for up to millions of classes without
ever storing a shuffled table. Two constructions, both integer arithmetic on int64 tensors (identical on CPU
and CUDA, for any batch shape):

- **mixed-radix Feistel** when ``size = A * B`` with both factors at least 16 (A_n's n(n+1) and n(n^2-1)
  always qualify): ``i = a * B + b`` and each round adds a keyed hash of one part to the other, modulo its
  radix. Every round is a bijection of ``Z_A x Z_B``, so no cycle-walking is needed.
- **binary Feistel with cycle-walking** otherwise: a balanced Feistel network over ``2**(2h) >= size``
  values, re-applied until the value falls below ``size`` (a bijection restricted to ``[0, size)``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["KeyedPermutation"]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_MIX = 0x045D9F3B  # < 2**27: a hash input below 2**32 keeps the product below 2**59 (no int64 overflow)
_SHIFT = 17  # take the well-mixed middle bits of the product
_MIN_RADIX = 16
_MAX_RADIX = 2**31
_FACTOR_SEARCH = 100_000  # divisors tried below sqrt(size)


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64 on Python ints: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return state, z ^ (z >> 31)


def _hash(v: torch.Tensor, key: int) -> torch.Tensor:
    """Keyed multiplicative hash of values below 2**31 (key below 2**32)."""
    return ((v ^ key) * _MIX) >> _SHIFT


def _balanced_factor(size: int) -> tuple[int, int] | None:
    """``(A, B)`` with ``A * B == size``, ``A <= B`` as close as a short search finds, both in [16, 2**31)."""
    root = math.isqrt(size)
    for a in range(root, max(root - _FACTOR_SEARCH, _MIN_RADIX - 1), -1):
        if size % a == 0:
            b = size // a
            return (a, b) if b < _MAX_RADIX else None
    return None


class KeyedPermutation:
    """Bijection of ``[0, size)`` keyed by ``(seed, salt)``; ``forward`` and ``inverse`` work per index.

    Args:
        size: number of elements (>= 0, at most 2**62).
        seed: the key; different seeds give unrelated permutations.
        salt: extra key material (e.g. the interpolation level) so levels of one system shuffle independently.
        rounds: Feistel rounds.
    """

    def __init__(self, size: int, seed: int, *, salt: int = 0, rounds: int = 8) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if size > 2**62:
            raise ValueError(f"size {size} exceeds the supported 2**62")
        self.size, self.seed = int(size), int(seed)
        state = (self.seed * 0x100000001B3 + salt * 0x9E3779B1 + self.size) & _M64
        self.keys: list[int] = []
        for _ in range(rounds):
            state, out = _splitmix64(state)
            self.keys.append(out & _M32)
        self.radix = _balanced_factor(self.size) if self.size >= _MIN_RADIX**2 else None
        bits = max(2, (self.size - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1

    # ------------------------------------------------------------------------------------- mixed radix
    def _radix(self, v: torch.Tensor, inverse: bool) -> torch.Tensor:
        big_a, big_b = self.radix
        a, b = v // big_b, v % big_b
        order = list(enumerate(self.keys))
        for r, key in reversed(order) if inverse else order:
            sign = -1 if inverse else 1
            if r % 2 == 0:
                b = (b + sign * (_hash(a, key) % big_b)) % big_b
            else:
                a = (a + sign * (_hash(b, key) % big_a)) % big_a
        return a * big_b + b

    # ------------------------------------------------------------------------------------- binary + walk
    def _encrypt(self, v: torch.Tensor) -> torch.Tensor:
        left, right = v >> self.half, v & self.mask
        for key in self.keys:
            left, right = right, left ^ (_hash(right, key) & self.mask)
        return (left << self.half) | right

    def _decrypt(self, v: torch.Tensor) -> torch.Tensor:
        left, right = v >> self.half, v & self.mask
        for key in reversed(self.keys):
            left, right = right ^ (_hash(left, key) & self.mask), left
        return (left << self.half) | right

    def _walk(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        step = self._decrypt if inverse else self._encrypt
        out = step(idx)
        outside = out >= self.size
        while bool(outside.any()):
            out[outside] = step(out[outside])
            outside = out >= self.size
        return out

    def _apply(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        idx = idx.long()
        if self.size <= 1 or idx.numel() == 0:
            return idx.clone()
        return self._radix(idx, inverse) if self.radix else self._walk(idx, inverse)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Permuted position of each index; ``idx`` is an integer tensor of values in ``[0, size)``."""
        return self._apply(idx, inverse=False)

    def inverse(self, idx: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`forward`: ``inverse(forward(i)) == i``."""
        return self._apply(idx, inverse=True)

    __call__ = forward
