"""lscdistill: train networks toward fixed class centers (latent space configuration) instead of a classifier."""

__version__ = "0.1.0"

from .systems import create_system, list_systems, system_size

__all__ = ["__version__", "create_system", "list_systems", "system_size"]
