"""Matting datasets: synthetic portraits, folders in the public datasets' layouts, and
unlabeled photos and videos.

Dataset specs (every `--data` option accepts them):
  synthetic:N@S[+seedK]          N synthetic portraits generated at S x S from seeds K..K+N-1
                                 (`synthetic:N` generates at the requested size; K defaults
                                 to open_dataset's `seed`, 0)
  synthetic-shifted:N@S[+seedK]  the same with generator settings the standard portraits
                                 never have (close-ups, bad exposure, noise: `synthetic`),
                                 a second distribution to measure imitation on
  DIR                            a folder whose layout is recognised by its folder names:
                                 PPM-100 (image/ + matte/), P3M-10k (blurred_image/ or
                                 original_image/ + mask/ [+ trimap/]), AM-2k (original/ +
                                 mask/ [+ trimap/]), generic (images/ + alphas/ or mattes/
                                 [+ trimaps/]). A root holding train/ and validation/ uses
                                 train/ when training, validation/ otherwise; a split made
                                 of several such folders (P3M-500-P, P3M-500-NP) uses all.
  images=DIR,alphas=DIR[,trimaps=DIR]   explicit folders (paths must not contain commas)
  DIR (no layout), FILE          unlabeled: every image (JPEG, PNG, WebP, ...) and video
                                 (mp4, mov, webm, avi, mkv) anywhere under DIR, in path
                                 order, or one image or video file. A tree holding a folder
                                 named like a matte folder (matte/, alphas/, mask/, ...) is
                                 refused: it is a dataset whose layout was not recognised.
  ...@Rfps                       video frames sampled at R per second (default 1), e.g.
                                 clips/@2fps or call.mp4@0.5fps (see `video`)
  SPEC[A%:B%]                    the samples of SPEC from A % to B % of its length, in its
                                 order (A defaults to 0, B to 100): photos/[:90%] trains,
                                 photos/[90%:] is held out. A contiguous cut keeps the
                                 neighbouring frames of a video on one side.
  SPEC + SPEC [+ ...]            a mixture (the + has spaces around it). Unweighted, each
                                 part's samples appear once per epoch; W*SPEC weights every
                                 part (all or none): the epoch keeps the parts' total length
                                 and gives part k round(total * W_k / sum W) of its slots,
                                 repeating or spreading its samples evenly, e.g.
                                 "3*photos/ + 1*synthetic:20000@128" is 3/4 photos.
Images and mattes are paired by file stem; unpaired files are counted and reported
(a `DataWarning`), never fatal. Samples without a trimap get one from the alpha
(`transforms.trimap_from_alpha`). Unlabeled samples have no alpha (`RawSample.alpha` is
None, dataset items hold no "alpha"/"trimap"): a mixture with any unlabeled part is
unlabeled as a whole. Every source says `labeled`.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..memory import require_synthetic
from ..model.inputs import check_size
from .images import IMAGE_SUFFIXES, read_alpha, read_image
from .synthetic import render_portrait, sample_name
from .transforms import UNKNOWN, resize_sample, to_tensors, train_transform, trimap_from_alpha
from .video import VIDEO_SUFFIXES, read_frame, sample_times

# (layout name, image folders in order of preference, matte folders, trimap folders)
LAYOUTS = (
    ("PPM-100", ("image",), ("matte",), ("trimap",)),
    ("P3M-10k", ("blurred_image", "original_image"), ("mask",), ("trimap",)),
    ("AM-2k", ("original",), ("mask",), ("trimap",)),
    ("generic", ("images", "imgs", "img"), ("alphas", "alpha", "mattes", "masks"), ("trimaps",)),
)
TRAIN_SPLITS, EVAL_SPLITS = ("train", "training"), ("validation", "val", "test", "testing")
MATTE_FOLDERS = frozenset(d for _, _, mattes, trimaps in LAYOUTS for d in mattes + trimaps)
_SYNTHETIC = re.compile(r"synthetic(?:-(shifted))?:(\d+)(?:@(\d+))?(?:\+seed(\d+))?")
_MIXTURE = re.compile(r"\s+\+\s+")
_WEIGHT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*\*\s*(.+)", re.S)
_SLICE = re.compile(r"(.+?)\[\s*(?:(\d+(?:\.\d+)?)%)?\s*:\s*(?:(\d+(?:\.\d+)?)%)?\s*\]")
_FPS = re.compile(r"(.+?)@(\d+(?:\.\d+)?|\.\d+)fps")
DEFAULT_FPS = 1.0


class DataWarning(UserWarning):
    """Something about a dataset the user should know, but that does not stop the run."""


@dataclass(frozen=True)
class RawSample:
    """A sample at its own resolution, before any transform."""
    name: str
    image: np.ndarray           # uint8 (H, W, 3) RGB
    alpha: np.ndarray | None    # float32 (H, W) in [0, 1]; None: unlabeled
    trimap: np.ndarray | None   # uint8 (H, W) in {0, 128, 255}, None when not given


class SyntheticSource:
    """`count` synthetic portraits at `size`, sample i from seed `seed + i`."""

    def __init__(self, count: int, size: int, seed: int = 0, variant: str = "standard"):
        if count < 1 or size < 32 or seed < 0:
            raise UserError(f"synthetic:{count}@{size}+seed{seed}: need N >= 1, S >= 32, K >= 0")
        require_synthetic(size, f"synthetic:{count}@{size}: each {size}x{size} portrait")
        self.count, self.size, self.seed, self.variant = count, size, seed, variant
        self.has_trimaps, self.native_size, self.labeled = True, size, True
        kind = "synthetic portraits" + (f" ({variant})" if variant != "standard" else "")
        self.description = f"{kind}: {count} at {size}x{size}, seeds {seed}..{seed + count - 1}"

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> RawSample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        image, alpha8 = render_portrait(self.seed + index, self.size, self.variant)
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
        self.native_size, self.labeled = None, True

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


@dataclass(frozen=True)
class _Item:
    name: str
    path: Path
    seconds: float | None       # a video frame's time; None: an image file


class UnlabeledSource:
    """Images and video frames without mattes (module doc: DIR without a layout, FILE)."""

    def __init__(self, items: list[_Item], description: str):
        if not items:
            raise UserError(f"{description}: no images or video frames")
        self.items, self.description = items, description
        self.has_trimaps, self.native_size, self.labeled = False, None, False

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, index: int) -> RawSample:
        item = self.items[index]
        image = read_image(item.path) if item.seconds is None else read_frame(item.path, item.seconds)
        return RawSample(item.name, image, None, None)


class SliceSource:
    """Samples [start, stop) of another source (module doc: SPEC[A%:B%])."""

    def __init__(self, inner, start: int, stop: int, spec: str):
        if stop <= start:
            raise UserError(f"{spec!r}: selects no sample of the {len(inner)}")
        self.inner, self.start, self.stop = inner, start, stop
        self.has_trimaps, self.native_size = inner.has_trimaps, inner.native_size
        self.labeled = inner.labeled
        self.description = f"samples {start}..{stop - 1} of {inner.description}"

    def __len__(self) -> int:
        return self.stop - self.start

    def sample(self, index: int) -> RawSample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.inner.sample(self.start + index)


class MixtureSource:
    """Several sources as one (module doc: SPEC + SPEC, W*SPEC). Part k owns the slots
    starts[k]..starts[k+1]-1 and maps slot j to its sample j * len(part) // slots."""

    def __init__(self, parts: list, weights: list[float] | None):
        self.parts = parts
        self.labeled = all(p.labeled for p in parts)
        self.has_trimaps = self.labeled and all(p.has_trimaps for p in parts)
        sizes = {p.native_size for p in parts}
        self.native_size = sizes.pop() if len(sizes) == 1 else None
        lengths = [len(p) for p in parts]
        self.slots = lengths if weights is None else apportion(sum(lengths), weights)
        self.starts = [0]
        for count in self.slots:
            self.starts.append(self.starts[-1] + count)
        shares = (", ".join(f"{c / self.starts[-1]:.0%}" for c in self.slots))
        self.description = " + ".join(p.description for p in parts) + f" (shares {shares})"

    def __len__(self) -> int:
        return self.starts[-1]

    def part_of(self, index: int) -> int:
        """Which part slot `index` belongs to."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bisect.bisect_right(self.starts, index) - 1

    def sample(self, index: int) -> RawSample:
        k = self.part_of(index)
        part = self.parts[k]
        s = part.sample((index - self.starts[k]) * len(part) // self.slots[k])
        return s if self.labeled else dataclasses.replace(s, alpha=None, trimap=None)


def apportion(total: int, weights: list[float]) -> list[int]:
    """`total` slots split in proportion to `weights` (largest remainders), each >= 1."""
    if total < len(weights):
        raise UserError(f"a mixture of {len(weights)} parts needs at least as many samples")
    exact = [total * w / sum(weights) for w in weights]
    counts = [max(1, math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda k: counts[k] - exact[k])
    for k in by_remainder[:max(0, total - sum(counts))]:
        counts[k] += 1
    while sum(counts) > total:  # only after raising tiny shares to 1
        counts[max(range(len(counts)), key=lambda k: counts[k] - exact[k])] -= 1
    return counts


class MattingDataset(torch.utils.data.Dataset):
    """Items: {"image" (3,S,S) in [-1,1], "alpha" (1,S,S) in [0,1], "trimap" (1,S,S) in
    {0,0.5,1}, "name"}; unlabeled sources give "image" and "name" only. train=True: random
    crop/resize, flip, colour jitter, drawing from torch's RNG (seeded per DataLoader
    worker); train=False: deterministic resize."""

    def __init__(self, source, size: int, train: bool):
        self.source, self.size, self.train = source, size, train
        self.labeled = source.labeled

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
    check_size(size)
    return MattingDataset(open_source(spec, size=size, train=train, seed=seed), size, train)


def open_source(spec: str, *, size: int | None = None, train: bool = False, seed: int = 0):
    """The raw samples behind a spec, at their own resolution (for evaluation)."""
    spec = spec.strip()
    parts = _MIXTURE.split(spec)
    if len(parts) > 1:
        return _mixture(parts, size=size, train=train, seed=seed)
    if m := _SLICE.fullmatch(spec):
        inner = open_source(m[1], size=size, train=train, seed=seed)
        lo, hi = float(m[2] or 0), float(m[3] or 100)
        if not 0 <= lo <= hi <= 100:
            raise UserError(f"{spec!r}: need 0% <= A% <= B% <= 100%")
        return SliceSource(inner, math.floor(lo / 100 * len(inner)),
                           math.floor(hi / 100 * len(inner)), spec)
    if spec.startswith("synthetic"):
        m = _SYNTHETIC.fullmatch(spec)
        if not m:
            raise UserError(f"{spec!r}: expected synthetic:N@S or synthetic:N@S+seedK")
        gen_size = int(m[3]) if m[3] else size
        if gen_size is None:
            raise UserError(f"{spec!r}: give the size, as in synthetic:{m[2]}@128")
        return SyntheticSource(int(m[2]), gen_size, int(m[4]) if m[4] else seed,
                               m[1] or "standard")
    if "=" in spec:
        return _explicit_source(spec)
    m = _FPS.fullmatch(spec)
    path, fps = (Path(m[1]), float(m[2])) if m else (Path(spec), None)
    if fps is not None and fps <= 0:
        raise UserError(f"{spec!r}: the frame rate must be > 0")
    if path.is_file():
        return _unlabeled_source(path, fps)
    return _folder_source(path, train, fps)


def _mixture(parts: list[str], **options) -> MixtureSource:
    weighted = [_WEIGHT.fullmatch(p) for p in parts]
    if any(weighted) and not all(weighted):
        raise UserError(f"{' + '.join(parts)!r}: weight every part of a mixture (W*SPEC) or none")
    weights = [float(m[1]) for m in weighted] if all(weighted) else None
    if weights is not None and min(weights) <= 0:
        raise UserError(f"{' + '.join(parts)!r}: mixture weights must be > 0")
    specs = [m[2] for m in weighted] if weights else parts
    return MixtureSource([open_source(s, **options) for s in specs], weights)


def spec_parts(spec: str) -> list[tuple[str, tuple[float, float]]]:
    """(base spec, (A, B) percent cut) of each part of a spec, weights and @fps left out;
    parses only, opens nothing (for checks such as held-out data being disjoint)."""
    parts = []
    for part in _MIXTURE.split(spec.strip()):
        weighted = _WEIGHT.fullmatch(part.strip())
        part = (weighted[2] if weighted else part).strip()
        sliced = _SLICE.fullmatch(part)
        cut = (float(sliced[2] or 0), float(sliced[3] or 100)) if sliced else (0.0, 100.0)
        base = sliced[1].strip() if sliced else part
        rate = None if base.startswith("synthetic") else _FPS.fullmatch(base)
        parts.append((rate[1] if rate else base, cut))
    return parts


def spec_paths(spec: str | None) -> list[Path]:
    """The files and folders a spec reads (none for synthetic data), to keep outputs off
    them; parses only."""
    found = []
    for base, _ in spec_parts(spec) if spec else []:
        if base.startswith("synthetic"):
            continue
        if "=" in base:
            found += [Path(v.strip()) for _, _, v in (p.partition("=") for p in base.split(","))
                      if v.strip()]
        else:
            found.append(Path(base))
    return found


def synthetic_seeds(spec: str) -> range | None:
    """Seeds a `synthetic[-shifted]:N@S+seedK` spec draws from (K defaults to 0); None for
    any other spec."""
    m = _SYNTHETIC.fullmatch(spec.strip())
    if not m:
        return None
    start = int(m[4] or 0)
    return range(start, start + int(m[2]))


def synthetic_at(spec: str, size: int) -> str:
    """A `synthetic[-shifted]:N@S[+seedK]` spec rendered at `size` instead: the same
    portraits (same seeds) at another resolution. Any other spec comes back unchanged."""
    m = _SYNTHETIC.fullmatch(spec.strip())
    if not m:
        return spec
    return f"synthetic{'-shifted' if m[1] else ''}:{m[2]}@{size}+seed{m[4] or 0}"


def is_synthetic(spec: str) -> bool:
    """True when every part of a spec is synthetic portraits."""
    return all(base.startswith("synthetic") for base, _ in spec_parts(spec))


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


def _folder_source(root: Path, train: bool, fps: float | None = None):
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
        matte_dirs = [d for d in root.rglob("*") if d.is_dir() and d.name in MATTE_FOLDERS]
        if not matte_dirs and _media_files(root):
            return _unlabeled_source(root, fps)
        raise UserError(f"{root}: no dataset layout recognised (expected image/+matte/ "
                        "(PPM-100), blurred_image/ or original_image/ + mask/ (P3M-10k), "
                        "original/+mask/ (AM-2k), images/+alphas/, or train/ and validation/ "
                        "holding one of those" + (f"; {matte_dirs[0]} holds mattes, so this is "
                        "not a folder of unlabeled photos)" if matte_dirs else
                        "), nor any image or video for unlabeled training"))
    if fps is not None:
        raise UserError(f"{root}: a matting dataset has no videos; @fps is for video folders")
    layout, folders = found
    pairs = find_pairs(*folders)
    return FolderSource(pairs, f"{layout}: {len(pairs)} pairs in {folders[0].parent}")


def _media_files(root: Path) -> list[Path]:
    """Images and videos under root (any depth, hidden files and folders left out), sorted."""
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _unlabeled_source(path: Path, fps: float | None) -> UnlabeledSource:
    files = _media_files(path) if path.is_dir() else [path]
    fps = DEFAULT_FPS if fps is None else fps
    items, names, videos = [], {}, 0
    for file in files:
        name = str(file.relative_to(path).with_suffix("")) if path.is_dir() else file.stem
        if name in names:
            raise UserError(f"{path}: {names[name].name} and {file.name} would share the "
                            f"sample name {name!r}")
        names[name] = file
        if file.suffix.lower() in VIDEO_SUFFIXES:
            videos += 1
            items += [_Item(f"{name}/{k:06d}", file, t)
                      for k, t in enumerate(sample_times(file, fps))]
        elif file.suffix.lower() in IMAGE_SUFFIXES:
            items.append(_Item(name, file, None))
        else:
            raise UserError(f"{file}: neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                            f"({', '.join(VIDEO_SUFFIXES)})")
    frames = sum(item.seconds is not None for item in items)
    what = [f"{len(items) - frames} images"] * (len(items) > frames) + \
           [f"{frames} frames of {videos} videos at {fps:g} fps"] * bool(videos)
    return UnlabeledSource(items, f"unlabeled: {' and '.join(what) or 'nothing'} in {path}")


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
