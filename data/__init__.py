"""Ground floor: assets, loaders, preparation, the catalog and the dataset directory."""
from .catalog import Catalog, normalize_title
from .dataset import RecDataset
from .util import DataError

__all__ = ["Catalog", "DataError", "RecDataset", "normalize_title"]
