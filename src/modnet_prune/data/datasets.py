"""Matting datasets: synthetic portraits and folders in the public datasets' layouts.

Dataset specs (every `--data` option accepts them):
  synthetic:N@S[+seedK]          N synthetic portraits generated at S x S from seeds K..K+N-1
                                 (`synthetic:N` generates at the requested size; K defaults
                                 to open_dataset's `seed`, 0)
  DIR                            a folder whose layout is recognised by its folder names:
                                 PPM-100 (image/ + matte/), P3M-10k (blurred_image/ or
                                 original_image/ + mask/ [+ trimap/]), AM-2k (original/ +
                                 mask/ [+ trimap/]), generic (images/ + alphas/ or mattes/
                                 [+ trimaps/]). A root holding train/ and validation/ uses
                                 train/ when training, validation/ otherwise; a split made
                                 of several such folders (P3M-500-P, P3M-500-NP) uses all.
  images=DIR,alphas=DIR[,trimaps=DIR]   explicit folders (paths must not contain commas)
Images and mattes are paired by file stem; unpaired files are counted and reported
(a `DataWarning`), never fatal. Samples without a trimap get one from the alpha
(`transforms.trimap_from_alpha`).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..memory import require_synthetic
from .images import IMAGE_SUFFIXES, read_alpha, read_image
from .synthetic import render_portrait, sample_name
from .transforms import UNKNOWN, resize_sample, to_tensors, train_transform, trimap_from_alpha

# (layout name, image folders in order of preference, matte folders, trimap folders)
LAYOUTS = (
    ("PPM-100", ("image",), ("matte",), ("trimap",)),
    ("P3M-10k", ("blurred_image", "original_image"), ("mask",), ("trimap",)),
    ("AM-2k", ("original",), ("mask",), ("trimap",)),
    ("generic", ("images", "imgs", "img"), ("alphas", "alpha", "mattes", "masks"), ("trimaps",)),
)
TRAIN_SPLITS, EVAL_SPLITS = ("train", "training"), ("validation", "val", "test", "testing")
_SYNTHETIC = re.compile(r"synthetic:(\d+)(?:@(\d+))?(?:\+seed(\d+))?")


class DataWarning(UserWarning):
    """Something about a dataset the user should know, but that does not stop the run."""


@dataclass(frozen=True)
class RawSample:
    """A sample at its own resolution, before any transform."""
    name: str
    image: np.ndarray           # uint8 (H, W, 3) RGB
    alpha: np.ndarray           # float32 (H, W) in [0, 1]
    trimap: np.ndarray | None   # uint8 (H, W) in {0, 128, 255}, None when not given


class SyntheticSource:
    """`count` synthetic portraits at `size`, sample i from seed `seed + i`."""

    def __init__(self, count: int, size: int, seed: int = 0):
        if count < 1 or size < 32 or seed < 0:
            raise UserError(f"synthetic:{count}@{size}+seed{seed}: need N >= 1, S >= 32, K >= 0")
        require_synthetic(size, f"synthetic:{count}@{size}: each {size}x{size} portrait")
        self.count, self.size, self.seed = count, size, seed
        self.has_trimaps, self.native_size = True, size
        self.description = (f"synthetic portraits: {count} at {size}x{size}, "
                            f"seeds {seed}..{seed + count - 1}")

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> RawSample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        image, alpha8 = render_portrait(self.seed + index, self.size)
        alpha = alpha8.astype(np.float32) / 255.0
        return RawSample(sample_name(self.seed + index), image, alpha, trimap_from_alpha(alpha))


@dataclass(frozen=True)
class _Pair:
    name: str
    image: Path
    alpha: Path
    trimap: Path | None


class FolderSource:
    """Image/matte(/trimap) files paired by stem; see `find_pairs` for the layouts."""

    def __init__(self, pairs: list[_Pair], description: str):
        self.pairs, self.description = pairs, description
        self.has_trimaps = all(p.trimap is not None for p in pairs)
        self.native_size = None

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, index: int) -> RawSample:
        pair = self.pairs[index]
        image, alpha = read_image(pair.image), read_alpha(pair.alpha)
        trimap = None if pair.trimap is None else _read_trimap(pair.trimap)
        for what, arr in (("matte", alpha), ("trimap", trimap)):
            if arr is not None and arr.shape[:2] != image.shape[:2]:
                raise UserError(f"{pair.name}: image is {image.shape[1]}x{image.shape[0]} but "
                                f"its {what} is {arr.shape[1]}x{arr.shape[0]}")
        return RawSample(pair.name, image, alpha, trimap)


def _read_trimap(path: Path) -> np.ndarray:
    t = read_alpha(path)
    return np.where(t < 0.25, 0, np.where(t > 0.75, 255, UNKNOWN)).astype(np.uint8)


class MattingDataset(torch.utils.data.Dataset):
    """Items: {"image" (3,S,S) in [-1,1], "alpha" (1,S,S) in [0,1], "trimap" (1,S,S) in
    {0,0.5,1}, "name"}. train=True: random crop/resize, flip, colour jitter, drawing from
    torch's RNG (seeded per DataLoader worker); train=False: deterministic resize."""

    def __init__(self, source, size: int, train: bool):
        self.source, self.size, self.train = source, size, train

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        s = self.source.sample(index)
        if self.train:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            image, alpha, trimap = train_transform(rng, s.image, s.alpha, s.trimap, self.size)
        else:
            image, alpha, trimap = resize_sample(s.image, s.alpha, s.trimap, self.size)
        item = to_tensors(image, alpha, trimap)
        item["name"] = s.name
        return item

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return f"MattingDataset({self.source.description}; {mode} at {self.size}x{self.size})"


def open_dataset(spec: str, *, size: int, train: bool, seed: int = 0) -> MattingDataset:
    """Dataset from a spec (module doc): items are S x S tensors, S = `size`. `seed` is the
    first synthetic seed when the spec has no `+seedK`; folders ignore it."""
    if size < 32 or size % 32:
        raise UserError(f"size {size}: must be a positive multiple of 32 (MODNet's stride)")
    return MattingDataset(open_source(spec, size=size, train=train, seed=seed), size, train)


def open_source(spec: str, *, size: int | None = None, train: bool = False, seed: int = 0):
    """The raw samples behind a spec, at their own resolution (for evaluation)."""
    spec = spec.strip()
    if spec.startswith("synthetic"):
        m = _SYNTHETIC.fullmatch(spec)
        if not m:
            raise UserError(f"{spec!r}: expected synthetic:N@S or synthetic:N@S+seedK")
        gen_size = int(m[2]) if m[2] else size
        if gen_size is None:
            raise UserError(f"{spec!r}: give the size, as in synthetic:{m[1]}@128")
        return SyntheticSource(int(m[1]), gen_size, int(m[3]) if m[3] else seed)
    if "=" in spec:
        return _explicit_source(spec)
    return _folder_source(Path(spec), train)


def spec_folders(spec: str | None) -> list[Path]:
    """The folders a data spec reads (none for synthetic data), to keep outputs off them."""
    if not spec or spec.strip().startswith("synthetic"):
        return []
    if "=" in spec:
        return [Path(part.partition("=")[2].strip()) for part in spec.split(",")
                if part.partition("=")[2].strip()]
    return [Path(spec.strip())]


def _explicit_source(spec: str) -> FolderSource:
    fields = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in ("images", "alphas", "trimaps") or not value.strip():
            raise UserError(f"{spec!r}: expected images=DIR,alphas=DIR[,trimaps=DIR]")
        fields[key.strip()] = Path(value.strip())
    if "images" not in fields or "alphas" not in fields:
        raise UserError(f"{spec!r}: both images=DIR and alphas=DIR are needed")
    for folder in fields.values():
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder")
    pairs = find_pairs(fields["images"], fields["alphas"], fields.get("trimaps"))
    return FolderSource(pairs, f"{len(pairs)} pairs from {fields['images']} + {fields['alphas']}")


def _folder_source(root: Path, train: bool) -> FolderSource:
    if not root.exists():
        raise UserError(f"{root}: no such folder (nor a synthetic:N@S spec)")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    found = _layout(root)
    if found is None:
        split = next((root / s for s in (TRAIN_SPLITS if train else EVAL_SPLITS)
                      if (root / s).is_dir()), None)
        if split is not None:
            found = _layout(split)
            if found is None:
                parts = [(d, _layout(d)) for d in sorted(split.iterdir()) if d.is_dir()]
                parts = [(d, f) for d, f in parts if f is not None]
                if parts:
                    return _union(root, parts)
    if found is None:
        raise UserError(f"{root}: no dataset layout recognised (expected image/+matte/ "
                        "(PPM-100), blurred_image/ or original_image/ + mask/ (P3M-10k), "
                        "original/+mask/ (AM-2k), images/+alphas/, or train/ and validation/ "
                        "holding one of those)")
    layout, folders = found
    pairs = find_pairs(*folders)
    return FolderSource(pairs, f"{layout}: {len(pairs)} pairs in {folders[0].parent}")


def _layout(folder: Path):
    """(layout name, (image dir, matte dir, trimap dir or None)) or None."""
    for name, images, mattes, trimaps in LAYOUTS:
        image = next((folder / d for d in images if (folder / d).is_dir()), None)
        matte = next((folder / d for d in mattes if (folder / d).is_dir()), None)
        if image and matte:
            trimap = next((folder / d for d in trimaps if (folder / d).is_dir()), None)
            return name, (image, matte, trimap)
    return None


def _union(root: Path, parts) -> FolderSource:
    pairs, names = [], []
    for folder, (layout, dirs) in parts:
        pairs += [_Pair(f"{folder.name}/{p.name}", p.image, p.alpha, p.trimap)
                  for p in find_pairs(*dirs)]
        names.append(f"{folder.name} ({layout})")
    return FolderSource(pairs, f"{len(pairs)} pairs in {root}: {', '.join(names)}")


def _by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in files:
            raise UserError(f"{folder}: two files share the stem {path.stem!r} "
                            f"({files[path.stem].name}, {path.name})")
        files[path.stem] = path
    return files


def find_pairs(image_dir: Path, alpha_dir: Path, trimap_dir: Path | None = None) -> list[_Pair]:
    """Pairs by file stem; unpaired files produce one DataWarning; none at all is an error."""
    images, alphas = _by_stem(image_dir), _by_stem(alpha_dir)
    trimaps = _by_stem(trimap_dir) if trimap_dir is not None else {}
    if not images:
        raise UserError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    stems = sorted(images.keys() & alphas.keys())
    if not stems:
        raise UserError(f"{image_dir} and {alpha_dir}: no image has a matte with the same "
                        f"file stem (e.g. image {next(iter(images))!r})")
    problems = [(sorted(images.keys() - alphas.keys()), "images without a matte"),
                (sorted(alphas.keys() - images.keys()), "mattes without an image")]
    if trimaps:
        problems.append((sorted(set(stems) - trimaps.keys()), "pairs without a trimap"))
    notes = [f"{len(names)} {what} (e.g. {', '.join(names[:3])})" for names, what in problems if names]
    if notes:
        warnings.warn(f"{image_dir.parent}: {'; '.join(notes)}; using {len(stems)} pairs",
                      DataWarning, stacklevel=3)
    return [_Pair(s, images[s], alphas[s], trimaps.get(s)) for s in stems]
