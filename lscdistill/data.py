"""Labeled data for extraction and training: scikit-learn's digits, image files through timm's readers (a folder
of class sub-folders, a ``.tar`` of one), or precomputed features; a torch ``Dataset`` per source and one
``DataLoader`` per split of a run (:class:`SplitLoader`).

Every source knows its labels up front (``labels [N]``), so a run can select, cap and shard samples exactly
(each sample in exactly one shard, none repeated) before any batch is read. Training augmentation is timm's
(:class:`Augment`), seeded per sample and epoch: the same batches with any number of workers and after a resume.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Augment",
    "FeatureData",
    "ImageData",
    "LabeledData",
    "Preprocess",
    "SplitLoader",
    "default_workers",
    "is_digits",
    "load_features",
    "load_images",
    "select_indices",
    "use_instance_labels",
]

DIGITS = "digits"
DIGITS_IMG_SIZE = 32  # digits are 8x8: upsampling to a model's 224 adds compute, not information
DIGITS_SPLITS = ("train", "val")
DIGITS_CROP_SCALE = (0.5, 1.0)  # random resized crops of the 8x8 digits keep at least half the area
DIGITS_VAL_FRACTION = 0.2  # digits:val is a fixed stratified 20% (seeded), digits:train the other 80%


def is_digits(data: str | None) -> bool:
    return data is not None and (data == DIGITS or data.startswith(DIGITS + ":"))


def digits_split(labels: np.ndarray, split: str | None) -> np.ndarray:
    """Indices of ``digits`` (all), ``digits:train`` or ``digits:val``: a fixed stratified split, the same on
    every machine (every class gives its first 20% after a seeded shuffle to val)."""
    if split is None:
        return np.arange(len(labels))
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}: use digits, digits:train or digits:val")
    order = np.random.default_rng(20240917).permutation(len(labels))
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        val[members[: round(DIGITS_VAL_FRACTION * len(members))]] = True
    return np.flatnonzero(val if split == "val" else ~val)


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

            _fix_timm_posterize()
            try:  # timm parses the policy string when it builds the transform
                create_transform(32, is_training=True, auto_augment=self.auto_augment)
            except Exception as exc:
                raise ValueError(f"--aug {self.policy!r}: timm cannot build it ({exc})") from None
        return self


AUG_PRESETS: dict[str, str | None] = {"none": None, "light": None, "randaugment": "rand-m9-mstd0.5-inc1"}
TIMM_AUTO_AUGMENT = ("rand", "augmix", "original", "v0", "3a", "trivial", "ta_wide")
NO_AUGMENT = Augment()


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
def _seeded(*key: int):
    """Python's, NumPy's and torch's global generators seeded from ``key`` (timm's transforms draw from all three),
    restored afterwards so the caller's random stream is untouched."""
    # timm draws from NumPy's legacy global generator, so that is the one to seed
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()  # noqa: NPY002
    a, b = np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(2, dtype=np.uint32)
    random.seed(int(a))
    np.random.seed(int(a))  # noqa: NPY002
    torch.random.default_generator.manual_seed(int(b))  # the CPU generator only (CUDA's is not touched)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)  # noqa: NPY002
        torch.random.set_rng_state(torch_state)


class _Samples(torch.utils.data.Dataset):
    """``(epoch, index) -> (transform(read(index)), label, index)``; random transforms seeded per key."""

    def __init__(self, data: LabeledData, read, transform, seed: int, random_transform: bool) -> None:
        self.data, self.read, self.transform = data, read, transform
        self.seed, self.random = seed, random_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        if self.random:
            with _seeded(self.seed, epoch, i):
                x = self.transform(self.read(i))
        else:
            x = self.transform(self.read(i))
        return x, int(self.data.labels[i]), i


def _check_labels(labels: np.ndarray, where: str, n_classes: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must be a 1-D array, got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{where}: labels must be integers, got non-integer values")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size == 0:
        raise ValueError(f"{where}: no samples")
    if labels.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, found {int(labels.min())}")
    found = int(labels.max()) + 1
    if n_classes is not None and found > n_classes:
        raise ValueError(f"{where}: label {found - 1} is outside [0, {n_classes}) (--n-classes {n_classes})")
    return labels, n_classes or found


# ------------------------------------------------------------------------------------------------ images
class ImageData(LabeledData):
    """Images for a model: scikit-learn's digits (in memory), or image files through timm's readers: a folder
    with one sub-folder of images per class (ImageFolder layout), a ``.tar`` of such a tree, or a folder of
    ``.tar`` files, one per class. (timm's streaming ``hfds/`` and ``wds/`` sources are not supported: a run needs
    every label before the first batch.)
    """

    def __init__(self, data: str, preprocess: Preprocess) -> None:
        self.preprocess = preprocess
        if is_digits(data):
            from sklearn.datasets import load_digits

            digits = load_digits()
            keep = digits_split(digits.target, data.partition(":")[2] or None)
            self._images = torch.from_numpy(digits.images[keep]).float().div_(16.0)  # [N, 8, 8] in [0, 1]
            self.labels, self.n_classes = _check_labels(digits.target[keep], "digits", 10)
            self.class_names = [str(c) for c in digits.target_names]
            self._reader = None
            self.description = {"name": data, "source": "sklearn.datasets.load_digits", "samples": len(self.labels)}
        else:
            self._images = None
            self._reader = _image_reader(Path(data))
            targets, names = _reader_targets(self._reader)
            self.labels, _ = _check_labels(np.asarray(targets), str(data), None)
            self.n_classes, self.class_names = len(names), names
            self.description = {"name": "imagefolder", "root": str(Path(data).resolve()), "samples": len(self.labels)}
        self.description["preprocess"] = preprocess.to_dict()

    def dataset(self, augment: Augment = NO_AUGMENT, seed: int = 0) -> _Samples:
        augment.check()
        if self._reader is None:
            return _Samples(self, self._digit, self._digits_transform(augment), seed, augment.active)
        return _Samples(self, self._read_file, self._timm_transform(augment), seed, augment.active)

    # digits: upsampled to img_size as tensors (bilinear), then shifts (light) or timm's transforms on the upsampled
    # image (other policies)
    def _digit(self, i: int) -> torch.Tensor:
        s = self.preprocess.img_size
        x = self._images[i].view(1, 1, 8, 8)
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)[0].expand(3, -1, -1)

    def _digits_transform(self, augment: Augment):
        p = self.preprocess
        mean, std = torch.tensor(p.mean).view(-1, 1, 1), torch.tensor(p.std).view(-1, 1, 1)
        if augment.policy == "none":
            return lambda x: (x - mean) / std
        if augment.policy == "light":
            return lambda x: (_random_shift(x, max(1, p.img_size // 8)) - mean) / std
        timm_transform = self._timm_transform(augment, default_scale=DIGITS_CROP_SCALE)
        return lambda x: timm_transform(_to_pil(x))

    def _read_file(self, i: int):
        try:
            image, _ = self._reader[i]
            from PIL import Image

            return Image.open(image).convert("RGB")
        except Exception as exc:
            raise ValueError(f"cannot read image {self._reader.filename(i)}: {exc}") from None

    def _timm_transform(self, augment: Augment, default_scale: tuple[float, float] | None = None):
        from timm.data import create_transform

        p = self.preprocess
        kwargs = {"input_size": (3, p.img_size, p.img_size), "interpolation": p.interpolation}
        kwargs |= {"mean": p.mean, "std": p.std, "crop_pct": p.crop_pct}
        if not augment.active:
            return create_transform(**kwargs, is_training=False)
        _fix_timm_posterize()
        return create_transform(
            **kwargs,
            is_training=True,
            scale=augment.scale or default_scale,
            hflip=augment.hflip,
            color_jitter=augment.color_jitter,
            auto_augment=augment.auto_augment,
            re_prob=augment.re_prob,
        )


def _posterize(img, bits_to_keep: int, **kwargs):
    """timm's posterize, where 0 bits gives the black image older Pillow gave: timm's RandAugment asks for 0 bits at
    its strongest levels (``rand-m9-mstd0.5-inc1`` reaches them), which Pillow 13 rejects with an error."""
    from PIL import Image
    from timm.data.auto_augment import posterize

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def _fix_timm_posterize() -> None:
    """Point timm's posterize operations at :func:`_posterize` (before any transform is built; idempotent)."""
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        if auto_augment.NAME_TO_OP.get(name) is auto_augment.posterize:
            auto_augment.NAME_TO_OP[name] = _posterize


def _random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift an image ``[C, H, W]`` by up to ``pad`` pixels each way (zero fill), drawn from torch's generator."""
    size = x.shape[-1]
    a, b = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    return F.pad(x, (pad, pad, pad, pad))[:, a : a + size, b : b + size]


def _to_pil(x: torch.Tensor):
    from PIL import Image

    return Image.fromarray(x.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def _image_reader(root: Path):
    """timm's reader for an image folder, a ``.tar`` of one, or a folder of per-class ``.tar`` files."""
    from timm.data import create_dataset

    if not root.exists():
        raise FileNotFoundError(f"data {root} does not exist (give 'digits', an image folder or a .tar of one)")
    try:
        reader = create_dataset("", root=str(root), split="", search_split=False).reader
    except (FileNotFoundError, RuntimeError, AssertionError, ValueError) as exc:
        raise ValueError(
            f"{root} is not a usable image folder (one sub-folder of images per class) or .tar of one: {exc}"
        ) from None
    if len(reader) == 0:
        raise ValueError(f"{root} is not a usable image folder (one sub-folder of images per class): no images")
    return reader


def _reader_targets(reader) -> tuple[list[int], list[str]]:
    """Every sample's class index and the class names, in index order, from a timm reader."""
    targets = getattr(reader, "targets", None)
    if targets is None:
        targets = [target for _, target in reader.samples]
    mapping = getattr(reader, "class_to_idx", None) or getattr(reader, "class_name_to_idx", {})
    return list(targets), [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def load_images(data: str, preprocess: Preprocess) -> ImageData:
    """``digits`` (or ``digits:train`` / ``digits:val``), an image folder, or a ``.tar`` of one."""
    return ImageData(data, preprocess)


# ---------------------------------------------------------------------------------------------- features
class FeatureData(LabeledData):
    """Precomputed embeddings ``X [N, D]`` (``.npy``, memory-mapped, or an HDF5 dataset) with labels ``y [N]``
    (without labels, e.g. for ``predict``: every row labeled -1). Rows are read a batch at a time, in the main
    process (HDF5 handles do not survive a fork)."""

    max_workers = 0

    def __init__(
        self, features: str | os.PathLike, labels: str | os.PathLike | None, n_classes: int | None = None
    ) -> None:
        self._x, where = _open_matrix(str(features))
        self.n_dim = int(self._x.shape[1])
        self.class_names = None
        self.description = {"name": "features", "features": where, "samples": int(self._x.shape[0])}
        if labels is None:
            self.labels, self.n_classes = np.full(self._x.shape[0], -1, dtype=np.int64), 0
            return
        y_path = Path(labels)
        if not y_path.is_file():
            raise FileNotFoundError(f"labels file {y_path} does not exist")
        try:
            y = np.load(y_path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read labels {y_path}: {exc}") from None
        if len(y) != self._x.shape[0]:
            raise ValueError(f"{len(y):,} labels in {y_path} for {self._x.shape[0]:,} feature rows in {where}")
        self.labels, self.n_classes = _check_labels(y, str(y_path), n_classes)
        self.description["labels"] = str(y_path.resolve())

    def dataset(self, augment: Augment = NO_AUGMENT, seed: int = 0) -> _FeatureRows:
        return _FeatureRows(self)


class _FeatureRows(torch.utils.data.Dataset):
    """A batch of feature rows in one read (``__getitems__``), sorted by index: ``(X [B, D], y [B], idx [B])``."""

    def __init__(self, data: FeatureData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, keys: list[tuple[int, int]]):
        idx = np.sort(np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys)))
        contiguous = idx.size and idx[-1] - idx[0] + 1 == idx.size
        x = self.data._x
        rows = x[idx[0] : idx[-1] + 1] if contiguous else x[idx]
        return torch.from_numpy(np.array(rows, dtype=np.float32)), torch.from_numpy(self.data.labels[idx]), idx

    @staticmethod
    def collate(batch):
        return batch


def _open_matrix(spec: str):
    """``X.npy`` (memory-mapped) or ``X.h5[:dataset]`` (the only 2-D dataset if not named)."""
    path, _, name = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    if path.suffix == ".npy":
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read features {path}: {exc}") from None
    elif path.suffix in (".h5", ".hdf5"):
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"cannot read features {path}: {exc}") from None
        names = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2]
        if not name and len(names) != 1:
            raise ValueError(f"{path} holds 2-D datasets {names}: choose one with {path}:NAME")
        name = name or names[0]
        if name not in f:
            raise ValueError(f"{path} has no dataset {name!r}")
        x = f[name]
    else:
        raise ValueError(f"features must be a .npy or .h5 file, got {path}")
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"features {path} must be a 2-D float array, got shape {x.shape} dtype {x.dtype}")
    return x, f"{path.resolve()}" + (f":{name}" if name else "")


def load_features(
    features: str | os.PathLike, labels: str | os.PathLike | None, n_classes: int | None = None
) -> FeatureData:
    return FeatureData(features, labels, n_classes)


def use_instance_labels(data: LabeledData) -> LabeledData:
    """Every sample its own class (the paper's §5.3 construction): ``labels = arange(N)``."""
    data.labels = np.arange(len(data.labels), dtype=np.int64)
    data.n_classes, data.class_names = len(data.labels), None
    data.description = {**data.description, "instance_labels": True}
    return data


# ---------------------------------------------------------------------------------------------- selection
def select_indices(
    labels: np.ndarray, *, limit_per_class: int | None = None, shard: tuple[int, int] = (0, 1)
) -> np.ndarray:
    """Sample indices to process: the first ``limit_per_class`` of each class (dataset order), then shard
    ``i`` of ``n`` (every ``n``-th sample from ``i``). The union over shards is exactly the selection."""
    idx = np.arange(len(labels))
    if limit_per_class is not None:
        if limit_per_class < 1:
            raise ValueError(f"--limit-per-class must be >= 1, got {limit_per_class}")
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        first = np.searchsorted(sorted_labels, sorted_labels, side="left")
        rank_in_class = np.arange(len(labels)) - first
        idx = np.sort(order[rank_in_class < limit_per_class])
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} is invalid: need 0 <= i < n")
    return idx[i::n]
