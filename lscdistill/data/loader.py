"""The base of every source (:class:`LabeledData`: labels known up front, a torch ``Dataset`` keyed by
``(epoch, index)``) and one ``DataLoader`` per split of a run (:class:`SplitLoader`), whose random transforms are
seeded per sample and epoch: the same batches with any number of workers and after a resume."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .transforms import NO_AUGMENT, Augment

__all__ = ["MAX_DEFAULT_WORKERS", "LabeledData", "Samples", "SplitLoader", "default_workers"]


class LabeledData:
    """A labeled source: ``labels [N]`` int64, ``n_classes``, optional ``class_names``, ``description``.

    ``dataset(augment, seed)`` is a torch ``Dataset`` whose items are keyed by ``(epoch, index)`` and are
    ``(input, label, index)``; :class:`SplitLoader` wraps it in one ``DataLoader`` for a whole run.
    """

    labels: np.ndarray
    n_classes: int
    class_names: list[str] | None
    description: dict[str, Any]
    max_workers: int | None = None  # None: any number of DataLoader workers; 0: read in the main process only

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self, augment: Augment = NO_AUGMENT, seed: int = 0) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def batches(
        self, indices: np.ndarray, batch_size: int, workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """One pass without augmentation: ``(inputs, labels, sample indices)`` ``batch_size`` at a time."""
        yield from SplitLoader(self, batch_size, workers=workers, persistent=False)(indices)


MAX_DEFAULT_WORKERS = 8


def default_workers(accelerator, workers: int | None = None) -> int:
    """``workers`` if given, else 0 on the CPU (the processes would compete with the model for the same cores) and
    ``min(8, CPU cores per local process)`` on a GPU."""
    if workers is not None:
        return workers
    if accelerator.device.type == "cpu":
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # processes on this machine (torchrun sets it)
    return min(MAX_DEFAULT_WORKERS, max(1, (os.cpu_count() or 1) // local))


class SplitLoader:
    """One ``DataLoader`` for a split of a run: the caller sets the samples (and epoch) of each pass; workers
    persist between passes, pinned memory when a CUDA device is used.

    Augmentation draws for sample ``i`` in epoch ``e`` come from a generator seeded with ``(seed, e, i)``, so the
    batches are the same for any number of workers and after ``--resume`` at any step.
    """

    def __init__(
        self,
        data: LabeledData,
        batch_size: int,
        *,
        workers: int = 0,
        augment: Augment = NO_AUGMENT,
        seed: int = 0,
        pin_memory: bool = False,
        persistent: bool = True,
    ) -> None:
        if data.max_workers is not None:
            workers = min(workers, data.max_workers)
        self.data = data
        self._epoch, self._indices = 0, np.zeros(0, dtype=np.int64)
        dataset = data.dataset(augment, seed)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=_Keys(self),
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            pin_memory=pin_memory,
            collate_fn=getattr(dataset, "collate", None),
            generator=torch.Generator().manual_seed(seed),  # its per-pass worker seed is not drawn from torch's global
        )

    def __call__(self, indices: np.ndarray, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        self._epoch, self._indices = int(epoch), np.asarray(indices, dtype=np.int64)
        for x, y, idx in self.loader:
            yield x, y, np.asarray(idx)


class _Keys(torch.utils.data.Sampler):
    """The ``(epoch, index)`` keys of a :class:`SplitLoader`'s current pass (iterated in the main process)."""

    def __init__(self, owner: SplitLoader) -> None:
        self.owner = owner

    def __iter__(self):
        epoch = self.owner._epoch
        return ((epoch, int(i)) for i in self.owner._indices)

    def __len__(self) -> int:
        return len(self.owner._indices)


@contextlib.contextmanager
def _preserved_rng():
    """Python's, NumPy's and torch's global generators restored afterwards, so the caller's random stream is
    untouched by the seeding inside. Saving NumPy's state costs ~50 us, so a batch does it once, not per sample."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()  # noqa: NPY002
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)  # noqa: NPY002
        torch.random.set_rng_state(torch_state)


def _seed(*key: int) -> None:
    """Seed Python's, NumPy's and torch's global generators from ``key`` (timm's transforms draw from all three)."""
    # timm draws from NumPy's legacy global generator, so that is the one to seed
    a, b = np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(2, dtype=np.uint32)
    random.seed(int(a))
    np.random.seed(int(a))  # noqa: NPY002
    torch.random.default_generator.manual_seed(int(b))  # the CPU generator only (CUDA's is not touched)


class Samples(torch.utils.data.Dataset):
    """``(epoch, index) -> (transform(read(index)), label, index)``; random transforms seeded per key."""

    def __init__(self, data: LabeledData, read, transform, seed: int, random_transform: bool) -> None:
        self.data, self.read, self.transform = data, read, transform
        self.seed, self.random = seed, random_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        """A batch of samples (what the ``DataLoader`` asks for): the global generators are saved and restored once
        per batch, each sample's transform seeded by its own key (the same draws as one sample at a time)."""
        if not self.random:
            return [self._sample(i) for _, i in keys]
        with _preserved_rng():
            out = []
            for epoch, i in keys:
                _seed(self.seed, epoch, i)
                out.append(self._sample(i))
            return out

    def _sample(self, i: int):
        return self.transform(self.read(i)), int(self.data.labels[i]), i
