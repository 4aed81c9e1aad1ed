"""Rich progress bars on stderr (results stay on stdout)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["is_main_process", "progress_bar"]


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun / accelerate launch (which export ``RANK``): only the
    main process reports and writes shared outputs."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def progress_bar(
    description: str, total: int, *, disable: bool = False, initial: int = 0
) -> Iterator[Callable[..., None]]:
    """Yields ``advance(samples, loss=None, epoch=None)``; one bar step per call, with samples/s (and the epoch and
    the last loss given) shown.

    On an error the bar is removed, so the error is the only thing left on the screen.
    """
    if disable:
        yield lambda _n, loss=None, epoch=None: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, completed=initial, rate="")
        seen, shown = 0, None

        def advance(samples: int, loss: float | None = None, epoch: str | None = None) -> None:
            nonlocal seen, shown
            seen += samples
            shown = shown if loss is None else loss  # the last loss given stays on the bar
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{seen / elapsed:,.0f} samples/s" if elapsed > 0 else ""
            if shown is not None:
                rate = f"loss {shown:.4f}  {rate}"
            if epoch is not None:
                rate = f"epoch {epoch}  {rate}"
            progress.update(task, advance=1, rate=rate)

        try:
            yield advance
        except BaseException:
            progress.live.transient = True  # a failed run leaves only its error message
            raise
