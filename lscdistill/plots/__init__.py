"""Pictures (PNG, matplotlib's Agg backend): training curves of runs, and the latent space of a run like the
paper's Figures 3, 6 and 7 (class clusters on their predefined centers; continual learning from 5 to 9 classes).

matplotlib is imported inside the functions, so the rest of the package does not need it at import time.

- :func:`plot_training_curves` (:mod:`.curves`) — loss per optimizer step and validation top-1 per epoch, one
  line per run, read from each run's ``metrics.jsonl``.
- :func:`plot_latent` (:mod:`.latent`) — a run's embeddings of a data set coloured by class, with its class
  centers marked: a 2-D scatter (``dim 2``), a 3-D scatter on the unit sphere (``dim 3``), a PCA projection above.
- :func:`plot_continual` (:mod:`.latent`) — Figure 7's three panels: the first run on its classes, the first run
  on the data of all classes (new classes not trained yet), the continued run on all classes.

The figures that train their own models for the docs and the demo are in :mod:`lscdistill.demo_figures`.
"""

from __future__ import annotations

from .curves import CurvesPlot, plot_training_curves, read_metrics
from .latent import LatentPlot, plot_continual, plot_latent

__all__ = [
    "CurvesPlot",
    "LatentPlot",
    "plot_continual",
    "plot_latent",
    "plot_training_curves",
    "read_metrics",
]
