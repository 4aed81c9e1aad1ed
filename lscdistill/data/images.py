"""Images as a labeled source: scikit-learn's digits (in memory) or image files through timm's readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .digits import DIGITS_CROP_SCALE, digits_split, is_digits
from .labels import check_labels
from .loader import LabeledData, Samples
from .transforms import NO_AUGMENT, Augment, Preprocess, fix_timm_posterize, random_shift, to_pil

__all__ = ["ImageData", "load_images"]


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
            self.labels, self.n_classes = check_labels(digits.target[keep], "digits", 10)
            self.class_names = [str(c) for c in digits.target_names]
            self._reader = None
            self.description = {"name": data, "source": "sklearn.datasets.load_digits", "samples": len(self.labels)}
        else:
            self._images = None
            self._reader = _image_reader(Path(data))
            targets, names = _reader_targets(self._reader)
            self.labels, _ = check_labels(np.asarray(targets), str(data), None)
            self.n_classes, self.class_names = len(names), names
            self.description = {"name": "imagefolder", "root": str(Path(data).resolve()), "samples": len(self.labels)}
        self.description["preprocess"] = preprocess.to_dict()

    def dataset(self, augment: Augment = NO_AUGMENT, seed: int = 0) -> Samples:
        augment.check()
        if self._reader is None:
            return Samples(self, self._digit, self._digits_transform(augment), seed, augment.active)
        return Samples(self, self._read_file, self._timm_transform(augment), seed, augment.active)

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
            return lambda x: (random_shift(x, max(1, p.img_size // 8)) - mean) / std
        timm_transform = self._timm_transform(augment, default_scale=DIGITS_CROP_SCALE)
        return lambda x: timm_transform(to_pil(x))

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
        fix_timm_posterize()
        return create_transform(
            **kwargs,
            is_training=True,
            scale=augment.scale or default_scale,
            hflip=augment.hflip,
            color_jitter=augment.color_jitter,
            auto_augment=augment.auto_augment,
            re_prob=augment.re_prob,
        )


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
