"""MODNet built from an `Arch` of widths, and its loading/saving."""
from .arch import HEAD_CONVS, OUTPUT_CONVS, Arch
from .modnet import MODNet

__all__ = ["Arch", "MODNet", "HEAD_CONVS", "OUTPUT_CONVS"]
