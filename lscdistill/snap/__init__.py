"""``snap``: give every class a distinct vector of a vector system, closest to its mean embedding (paper §6.6).

Modules, in the order the data flows:

- :mod:`.candidates`: for each class mean, the K best vectors of the system and a bound on all others.
- :mod:`.lists`: every class's candidates as one CSR structure, widened where a class needs more.
- :mod:`.greedy` / :mod:`.exact`: the assignment over the lists (greedy matching; proven optimum).
- :mod:`.assign`: :func:`snap`, the entry point (checks, solvers, the :class:`SnapReport`).
- :mod:`.pca`: the optional PCA of the means (scikit-learn) recorded in the store.
- :mod:`.store`: :func:`run_snap`, class-means store in, snapped store out.

Note: ``lscdistill/__init__.py`` binds ``lscdistill.snap`` to the *function* :func:`snap`; import from this
package with ``from lscdistill.snap import ...``.
"""

from __future__ import annotations

from ..centers import load_system
from .assign import EXACT_AUTO_MAX, METHODS, SnapReport, SnapResult, snap
from .pca import Pca, fit_pca
from .store import SnapConfig, run_snap

__all__ = [
    "EXACT_AUTO_MAX",
    "METHODS",
    "Pca",
    "SnapConfig",
    "SnapReport",
    "SnapResult",
    "fit_pca",
    "load_system",
    "run_snap",
    "snap",
]
