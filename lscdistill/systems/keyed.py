"""A bijective keyed permutation of ``[0, size)``, computed per index in both directions.

Shuffled systems (the paper's A_nr) need "class c gets vector perm(c)" for up to millions of classes without
ever storing a shuffled table. A balanced Feistel network over ``2**(2h) >= size`` values is a bijection for
any round function; cycle-walking (re-applying it until the value falls below ``size``) restricts it to a
bijection of ``[0, size)``. Everything is integer arithmetic on int64 tensors, so the permutation is identical
on CPU and CUDA and for any batch shape.
"""

from __future__ import annotations

import torch

__all__ = ["KeyedPermutation"]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_MIX = 0x045D9F3B  # < 2**27, so (x < 2**32) * _MIX < 2**59 never overflows int64


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64 on Python ints: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return state, z ^ (z >> 31)


class KeyedPermutation:
    """Bijection of ``[0, size)`` keyed by ``(seed, salt)``; ``forward`` and ``inverse`` work per index.

    Args:
        size: number of elements (>= 0).
        seed: the key; different seeds give unrelated permutations.
        salt: extra key material (e.g. the interpolation level) so levels of one system shuffle independently.
        rounds: Feistel rounds (6+ mixes well).
    """

    def __init__(self, size: int, seed: int, *, salt: int = 0, rounds: int = 8) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if size > 2**62:
            raise ValueError(f"size {size} exceeds the supported 2**62")
        self.size = int(size)
        self.seed = int(seed)
        bits = max(2, (self.size - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        state = (self.seed * 0x100000001B3 + salt * 0x9E3779B1 + self.size) & _M64
        self.keys: list[int] = []
        for _ in range(rounds):
            state, out = _splitmix64(state)
            self.keys.append(out & _M32)

    def _f(self, r: torch.Tensor, key: int) -> torch.Tensor:
        x = (r ^ key) & _M32
        x = (x * _MIX) & _M32
        x = x ^ (x >> 16)
        x = (x * _MIX) & _M32
        x = x ^ (x >> 16)
        return x & self.mask

    def _encrypt(self, v: torch.Tensor) -> torch.Tensor:
        left, right = v >> self.half, v & self.mask
        for key in self.keys:
            left, right = right, left ^ self._f(right, key)
        return (left << self.half) | right

    def _decrypt(self, v: torch.Tensor) -> torch.Tensor:
        left, right = v >> self.half, v & self.mask
        for key in reversed(self.keys):
            left, right = right ^ self._f(left, key), left
        return (left << self.half) | right

    def _walk(self, idx: torch.Tensor, step) -> torch.Tensor:
        if self.size <= 1:
            return idx.clone()
        out = step(idx)
        outside = out >= self.size
        while bool(outside.any()):
            out[outside] = step(out[outside])
            outside = out >= self.size
        return out

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Permuted position of each index; ``idx`` is an int64 tensor of values in ``[0, size)``."""
        return self._walk(idx.long(), self._encrypt)

    def inverse(self, idx: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`forward`: ``inverse(forward(i)) == i``."""
        return self._walk(idx.long(), self._decrypt)

    __call__ = forward
