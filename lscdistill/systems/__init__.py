"""Vector systems: predefined class centers computed from their index, with O(n_dim) nearest-vector search.

>>> from lscdistill.systems import create_system
>>> system = create_system("an", 384, seed=0)  # the paper's A_nr: 147,840 roots in a seeded order
>>> len(system)
147840
"""

from . import an, planar, vn  # noqa: F401  (register the systems)
from ._registry import (
    SystemSpec,
    create_system,
    current_options,
    get_spec,
    list_systems,
    register_system,
    system_from_description,
    system_size,
)
from .base import Candidates, VectorSystem
from .keyed import KeyedPermutation
from .pattern import PatternSystem
from .planar import PlanarSystem
from .shuffled import ShuffledSystem

__all__ = [
    "Candidates",
    "KeyedPermutation",
    "PatternSystem",
    "PlanarSystem",
    "ShuffledSystem",
    "SystemSpec",
    "VectorSystem",
    "create_system",
    "current_options",
    "get_spec",
    "list_systems",
    "register_system",
    "system_from_description",
    "system_size",
]
