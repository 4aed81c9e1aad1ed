"""Writing a file so that a crash never leaves a half-written one under its final name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file"]


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a hidden temporary path beside ``path`` (same suffix, so writers that go by it still work); renamed
    to ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    tmp = path.parent / f".{path.stem}.tmp{path.suffix}"
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
