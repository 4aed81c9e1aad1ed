"""A bijective keyed permutation of ``[0, size)``, computed per index in both directions.

Shuffled systems (the paper's A_nr) need "class c gets vector perm(c)" for up to millions of classes without
ever storing a shuffled table. Two constructions, both integer arithmetic on int64 tensors (identical on CPU
and CUDA, for any batch shape):

- **mixed-radix Feistel** when ``size = A * B`` with both factors at least 16 (A_n's n(n+1) and n(n^2-1)
  always qualify): ``i = a * B + b`` and each round adds a keyed hash of one part to the other, modulo its
  radix. Every round is a bijection of ``Z_A x Z_B``, so no cycle-walking is needed.
- **binary Feistel with cycle-walking** otherwise: a balanced Feistel network over ``2**(2h) >= size``
  values, re-applied until the value falls below ``size`` (a bijection restricted to ``[0, size)``).

Both directions are fixed-shape tensor programs (no host synchronization, no data-dependent branch), so they export
and compile: the mixed-radix rounds are plain arithmetic; cycle-walking runs a fixed number of rounds, the longest
walk of the domain (found once by walking every index, up to ``2**24`` elements), each round kept only where the
value is still outside, and below ``2**16`` elements both directions are a gathered table (``16 * size`` bytes,
built once). Only a cycle-walked domain above ``2**24`` (``planar`` with 36 doublings or more) falls back to a loop
that runs until every value is inside (data-dependent).

:meth:`KeyedPermutation.lookup` gives the same map as tables (per round one gather and one add, the reductions
deferred to two final tables), which a shuffled system runs for all its levels at once.
"""

from __future__ import annotations

import math

import torch

from .base import cached

__all__ = ["KeyedPermutation"]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_MIX = 0x045D9F3B  # < 2**27: a hash input below 2**32 keeps the product below 2**59 (no int64 overflow)
_SHIFT = 17  # take the well-mixed middle bits of the product
_MIN_RADIX = 16
_MAX_RADIX = 2**31
_FACTOR_SEARCH = 100_000  # divisors tried below sqrt(size)
_TABLE_MAX = 2**16  # cycle-walked domains up to this size are a lookup table
_BOUND_MAX = 2**24  # ... up to this size run the longest walk's number of rounds (found by walking them all)
_CHUNK = 2**20
_PREPARE_MAX = 2**20  # the constructor prepares cycle-walked domains up to this size


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64 on Python ints: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return state, z ^ (z >> 31)


def _hash(v: torch.Tensor, key: int) -> torch.Tensor:
    """Keyed multiplicative hash of values below 2**31 (key below 2**32); a new tensor (worked on in place)."""
    return torch.bitwise_xor(v, key).mul_(_MIX).bitwise_right_shift_(_SHIFT)


def feistel_radix(v: torch.Tensor, big_a: int, big_b: int, keys: list[int], inverse: bool) -> torch.Tensor:
    """Mixed-radix Feistel rounds on ``v`` in ``[0, big_a * big_b)``. Each round works in place on the fresh
    tensors it made (three hash ops and two for the update instead of five new tensors)."""
    a, b = v // big_b, v % big_b
    order = list(enumerate(keys))
    for r, key in reversed(order) if inverse else order:
        src, dst, radix = (a, b, big_b) if r % 2 == 0 else (b, a, big_a)
        h = _hash(src, key)
        # (dst +- h) mod radix == (dst +- (h mod radix)) mod radix: h < 2**42, no overflow
        (dst.sub_(h) if inverse else dst.add_(h)).remainder_(radix)
    return a.mul_(big_b).add_(b)


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
        self._rounds: int | None = -1  # -1: not computed yet
        self._tables: dict[tuple[torch.device, bool], torch.Tensor] = {}
        if self.radix is None and 1 < self.size <= _PREPARE_MAX:  # now, not while a caller traces or exports
            self.prepare()

    def prepare(self) -> None:
        """Build the CPU tables (small domains) or find the walk bound (larger ones) of a cycle-walked domain.

        Done by the constructor up to ``2**20`` elements; call it before ``torch.export``/``torch.compile`` for
        a larger cycle-walked domain, so that the (data-dependent) preparation is not traced.
        """
        if self.radix is None and self.size > 1:
            if self.size <= _TABLE_MAX:
                self._table(torch.device("cpu"), False), self._table(torch.device("cpu"), True)
            else:
                self.walk_rounds  # noqa: B018 - computes and caches the bound

    # ------------------------------------------------------------------------------------- mixed radix
    def _radix(self, v: torch.Tensor, inverse: bool) -> torch.Tensor:
        return feistel_radix(v, *self.radix, self.keys, inverse)

    # ------------------------------------------------------------------------------------- lookup form
    @property
    def lookup_span(self) -> int | None:
        """Entries of each table of :meth:`lookup`; ``None`` for a cycle-walked domain above ``2**16`` (no lookup
        form). A mixed-radix domain needs ``(rounds / 2 + 1) * max(A, B)``: the parts grow by one radix per round."""
        if self.size <= 1:
            return 1
        if self.radix:
            return ((len(self.keys) + 1) // 2 + 1) * max(self.radix)
        return self.size if self.size <= _TABLE_MAX else None

    def lookup(self, inverse: bool) -> tuple[int, list[tuple[bool, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """:meth:`forward` (or :meth:`inverse`) as table lookups, one gather and one add per round.

        Returns ``(radix, steps, final_a, final_b)``, CPU int64 tables of :attr:`lookup_span` entries: index
        ``i`` splits into ``a, b = divmod(i, radix)``; each step ``(updates_a, table)`` does ``a += table[b]`` or
        ``b += table[a]``; the result is ``final_a[a] + final_b[b]``. The mixed-radix rounds are exact: a table
        holds the round's hash of its index reduced mod one radix, added mod the other radix (negated for the
        inverse), and the reductions of the sums are deferred to the final tables. A cycle-walked domain (and
        one of a single element) is ``a == 0`` with all-zero steps and ``final_b`` its table.
        """
        span = self.lookup_span
        if span is None:
            raise ValueError(f"a cycle-walked domain of {self.size} elements has no lookup form")
        rounds = list(enumerate(self.keys))
        if not self.radix:
            radix = max(self.size, 1)
            final_b = self._table(torch.device("cpu"), inverse) if self.size > 1 else torch.zeros(1, dtype=torch.long)
            steps = [(r % 2 == 1, torch.zeros(span, dtype=torch.long)) for r, _ in rounds]
            return radix, steps[::-1] if inverse else steps, torch.zeros(span, dtype=torch.long), final_b
        big_a, big_b = self.radix
        i = torch.arange(span)
        steps = []
        for r, key in reversed(rounds) if inverse else rounds:
            src, dst = (big_b, big_a) if r % 2 else (big_a, big_b)
            h = _hash(i % src, key) % dst
            steps.append((r % 2 == 1, (-h) % dst if inverse else h))
        return big_b, steps, (i % big_a) * big_b, i % big_b

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

    def _walk_loop(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        """Cycle-walking until every value is inside: a data-dependent loop (tables and bounds are built with it)."""
        step = self._decrypt if inverse else self._encrypt
        out = step(idx)
        outside = out >= self.size
        while bool(outside.any()):
            out[outside] = step(out[outside])
            outside = out >= self.size
        return out

    @property
    def walk_rounds(self) -> int | None:
        """Steps of the longest cycle walk of this domain (the same both ways), or ``None`` above ``2**24``."""
        if self._rounds == -1:
            self._rounds = None
            if self.size <= _BOUND_MAX:
                longest = 1
                for start in range(0, self.size, _CHUNK):
                    v = self._encrypt(torch.arange(start, min(start + _CHUNK, self.size)))
                    steps = 1
                    while bool((v >= self.size).any()):
                        v = torch.where(v >= self.size, self._encrypt(v), v)
                        steps += 1
                    longest = max(longest, steps)
                self._rounds = longest
        return self._rounds

    def _table(self, device: torch.device, inverse: bool) -> torch.Tensor:
        if (device, inverse) not in self._tables:
            cpu = torch.device("cpu")
            if (cpu, inverse) not in self._tables:
                forward = self._walk_loop(torch.arange(self.size), inverse=False)
                table = torch.empty_like(forward).scatter_(0, forward, torch.arange(self.size)) if inverse else forward
                self._tables[(cpu, inverse)] = table
        return cached(self._tables, (device, inverse), lambda: self._tables[(cpu, inverse)].to(device))

    def _walk(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        if self.size <= _TABLE_MAX:
            return self._table(idx.device, inverse)[idx]
        rounds = self.walk_rounds
        if rounds is None:
            return self._walk_loop(idx, inverse)
        step = self._decrypt if inverse else self._encrypt
        out = step(idx)
        for _ in range(rounds - 1):  # fixed count: a value inside stays as it is
            out = torch.where(out >= self.size, step(out), out)
        return out

    def _apply(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        idx = idx.long()
        if self.size <= 1:
            return idx.clone()
        return self._radix(idx, inverse) if self.radix else self._walk(idx, inverse)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Permuted position of each index; ``idx`` is an integer tensor of values in ``[0, size)``."""
        return self._apply(idx, inverse=False)

    def inverse(self, idx: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`forward`: ``inverse(forward(i)) == i``."""
        return self._apply(idx, inverse=True)

    __call__ = forward
