"""lscdistill: train networks toward fixed class centers (latent space configuration) instead of a classifier.

The stable Python API (everything else may move between versions)::

    from lscdistill import create_system, SystemCenters, CosineLoss, open_store, snap, plan_dim, load
"""

from ._version import __version__
from .centers import SnappedCenters, StoreCenters, SystemCenters, TableCenters
from .inference import Classifier, load
from .losses import CosineLoss
from .planner import plan_dim
from .snap import snap
from .stores import open_store
from .systems import create_system, list_systems, system_size

__all__ = [
    "Classifier",
    "CosineLoss",
    "SnappedCenters",
    "StoreCenters",
    "SystemCenters",
    "TableCenters",
    "__version__",
    "create_system",
    "list_systems",
    "load",
    "open_store",
    "plan_dim",
    "snap",
    "system_size",
]
