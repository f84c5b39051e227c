"""Reading images and mattes the way users have them: JPEG/PNG, grayscale, RGBA,
16-bit, EXIF-rotated; writing PNGs atomically, marked as ours."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import UserError
from ..files import write_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# The tEXt "Software" of every PNG we write: tells our outputs from a user's files.
SOFTWARE = "modnet-prune"


def _open(path: str | Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as e:
        raise UserError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise UserError(f"{path}: is a folder, not an image") from e
    except Image.DecompressionBombError as e:  # PIL's guard against huge pixel counts
        raise UserError(f"{path}: refused, {e}") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable image ({type(e).__name__})") from e
    return ImageOps.exif_transpose(img)


def _to_float(img: Image.Image) -> np.ndarray:
    """Single-channel image as float32 in [0, 1], 8- or 16-bit aware."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if img.mode in ("I;16", "I;16B", "I;16L") or arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if img.mode == "I":  # 16-bit PNGs often decode as 32-bit ints holding 0..65535
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3): grayscale is replicated, alpha dropped, 16-bit scaled, EXIF applied."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(np.round(_to_float(img) * 255).astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def read_alpha(path: str | Path) -> np.ndarray:
    """Matte as float32 (H, W) in [0, 1]; an RGB(A) matte uses its first colour channel."""
    img = _open(path)
    if img.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
        img = img.convert("RGB").getchannel(0)
    return _to_float(img)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array (H, W) or (H, W, 3|4) as PNG, atomically, marked as ours."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)
    write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))


def is_our_png(path: str | Path) -> bool:
    """True when `path` is a PNG this tool wrote (reads the header chunks only)."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == SOFTWARE
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    return np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
