"""modnet-prune: structured pruning, distillation and deployment for MODNet."""
__version__ = "0.1.0"

from .model import Arch, MODNet  # noqa: E402
from .model.io import load, save  # noqa: E402

__all__ = ["Arch", "MODNet", "load", "save", "__version__"]
