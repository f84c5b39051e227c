"""Matting of images, folders and videos with any Runtime, under the MODNet inference protocol.

    rt = open_runtime("model.onnx")
    alpha = Matter(rt)(read_image("me.jpg"))           # float32 (H, W) in [0, 1]
    summary = matte_files(Matter(rt), ["photos/", "clip.mp4"], "out/", save=("alpha", "composite"))

Outputs mirror the inputs under the output folder: `photos/a/b.jpg` -> `out/a/b_alpha.png`
(and `_rgba.png`, `_composite.png`); `clip.mp4` -> `out/clip_alpha.mp4` (+ `_composite.mp4`).
Every output is written atomically; inputs are never written.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageColor
from tqdm import tqdm

from ..data.images import IMAGE_SUFFIXES, alpha_to_uint8, read_image, write_png
from ..data.protocol import protocol_size, to_original_size
from ..data.video import VIDEO_SUFFIXES
from ..model.inputs import MULTIPLE, normalise
from ..errors import UserError
from ..files import write_atomic
from .runtime import Runtime

SAVE_KINDS = ("alpha", "rgba", "composite")
VIDEO_KINDS = ("alpha", "composite")  # an RGBA cut-out has no widely playable video format
VIDEO_CRF = "16"  # H.264 quality: matte edges are worth more than file size
# Video frames per forward. On CPU, batches of 4 ran 8-22% slower than single frames (ORT and
# torch, 1 thread, 448x256); a GPU needs batches to fill up.
CPU_BATCH, GPU_BATCH = 1, 8


class Matter:
    """The inference protocol around a Runtime: uint8 RGB frames in, alpha at their size out.

    A runtime with a fixed input size (a `--static` ONNX export) gets every frame resized to
    that size instead of the protocol size; a fixed batch is filled by padding.
    """

    def __init__(self, runtime: Runtime, ref: int = 512):
        if ref < MULTIPLE:
            raise UserError(f"reference size {ref}: must be at least {MULTIPLE}")
        self.runtime, self.ref = runtime, ref

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.runtime.static_hw or protocol_size(height, width, self.ref)

    @torch.inference_mode()
    def network_input(self, frames: np.ndarray) -> np.ndarray:
        """(H, W, 3) or (N, H, W, 3) uint8 RGB -> the (N, 3, h, w) float32 batch the runtime
        gets: what int8 calibration must see, so that it sees what matting feeds."""
        frames = np.require(frames[None] if frames.ndim == 3 else frames, np.uint8, ["C", "W"])
        batch = torch.from_numpy(frames)  # writable: PIL's arrays are read-only views
        # as data.protocol.to_input, but batched and to any size (a static export fixes it)
        x = normalise(batch.permute(0, 3, 1, 2))
        return F.interpolate(x, size=self.input_size(*frames.shape[1:3]), mode="area").numpy()

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(H, W, 3) or (N, H, W, 3) uint8 RGB -> (H, W) or (N, H, W) float32 alpha."""
        single = frames.ndim == 3
        height, width = frames.shape[-3:-1]
        matte = torch.from_numpy(self._run(self.network_input(frames)))
        alpha = to_original_size(matte, height, width)[:, 0].numpy()
        return alpha[0] if single else alpha

    def _run(self, x: np.ndarray) -> np.ndarray:
        step = self.runtime.static_batch
        if not step:
            return self.runtime(x)
        parts = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), 0)])
            parts.append(self.runtime(padded)[:len(chunk)])
        return np.concatenate(parts)


@dataclass(frozen=True)
class Background:
    """What a composite is laid over: an RGB colour, or an image scaled to cover the frame."""

    color: tuple[int, int, int] = (255, 255, 255)
    image: np.ndarray | None = None

    @classmethod
    def parse(cls, text: str) -> "Background":
        """A colour name or #hex (PIL's names), or the path of an image file."""
        if Path(text).is_file():
            return cls(image=read_image(text))
        try:
            return cls(color=ImageColor.getrgb(text)[:3])
        except ValueError:
            raise UserError(f"background {text!r}: not a colour (name or #hex) nor an image "
                            "file") from None

    def fill(self, height: int, width: int) -> np.ndarray:
        if self.image is None:
            return np.broadcast_to(np.array(self.color, np.uint8), (height, width, 3))
        ih, iw = self.image.shape[:2]
        scale = max(height / ih, width / iw)  # cover, then centre-crop: no distortion
        h, w = max(height, round(ih * scale)), max(width, round(iw * scale))
        resized = np.asarray(Image.fromarray(self.image).resize((w, h), Image.BILINEAR))
        top, left = (h - height) // 2, (w - width) // 2
        return resized[top:top + height, left:left + width]


def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float32)
    return np.round(rgb * a + background * (1.0 - a)).clip(0, 255).astype(np.uint8)


@dataclass
class MatteSummary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs already there (skip_existing)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    images: int = 0
    frames: int = 0


@dataclass(frozen=True)
class _Job:
    src: Path
    dest: Path  # output path without the "_alpha.png" etc. tail

    @property
    def is_video(self) -> bool:
        return self.src.suffix.lower() in VIDEO_SUFFIXES

    def outputs(self, save: Iterable[str]) -> dict[str, Path]:
        if self.is_video:
            kinds, ext = [k for k in save if k in VIDEO_KINDS], ".mp4"
        else:
            kinds, ext = list(save), ".png"
        return {k: self.dest.with_name(f"{self.dest.name}_{k}{ext}") for k in kinds}


def plan_jobs(inputs: Iterable[str | Path], out_dir: Path,
              on_error: Callable[[Path, str], None]) -> list[_Job]:
    """Files as given; folders scanned recursively for images and videos, leaving out our
    own earlier outputs (so --out may lie inside an input folder)."""
    jobs, out_root = [], out_dir.resolve()
    for item in map(Path, inputs):
        if item.is_dir():
            found = [p for p in sorted(item.rglob("*")) if p.is_file()
                     and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                     and not (p.resolve().is_relative_to(out_root) and _is_output_name(p))]
            if not found:
                on_error(item, f"{item}: no images or videos in this folder")
            jobs += [_Job(p, out_dir / p.relative_to(item).with_suffix("")) for p in found]
        elif item.is_file():
            jobs.append(_Job(item, out_dir / item.stem))
        else:
            on_error(item, f"{item}: no such file or folder")
    return _disambiguate(jobs)


def _is_output_name(path: Path) -> bool:
    return any(path.name.endswith(f"_{kind}{ext}")
               for kind in SAVE_KINDS for ext in (".png", ".mp4"))


def _disambiguate(jobs: list[_Job]) -> list[_Job]:
    """`a.jpg` and `a.png` in one folder would share outputs: name those after the suffix too."""
    seen: dict[Path, int] = {}
    for job in jobs:
        seen[job.dest] = seen.get(job.dest, 0) + 1
    jobs = [_Job(j.src, j.dest.with_name(f"{j.dest.name}_{j.src.suffix[1:].lower()}"))
            if seen[j.dest] > 1 else j for j in jobs]
    owners: dict[Path, Path] = {}
    for job in jobs:
        if job.dest in owners:
            raise UserError(f"{owners[job.dest]} and {job.src} would write the same outputs; "
                            "matte them in separate runs")
        owners[job.dest] = job.src
    return jobs


def _refuse_overwriting_inputs(jobs: list[_Job], save: Iterable[str]) -> None:
    sources = {job.src.resolve() for job in jobs}
    for job in jobs:
        for out in job.outputs(save).values():
            if out.resolve() in sources:
                raise UserError(f"{out} is an input: choose an --out where outputs cannot "
                                "overwrite inputs")


def _write_all(paths: list[Path], write: Callable[[list[str]], None]) -> None:
    """write(temp_paths) once; then every file is renamed into place, or none on error."""
    if not paths:
        return write([])
    write_atomic(paths[0], lambda tmp: _write_all(paths[1:], lambda rest: write([tmp, *rest])))


def _matte_image(matter: Matter, job: _Job, outputs: dict[str, Path],
                 background: Background) -> None:
    rgb = read_image(job.src)
    alpha = matter(rgb)
    a8 = alpha_to_uint8(alpha)
    if "alpha" in outputs:
        write_png(outputs["alpha"], a8)
    if "rgba" in outputs:
        write_png(outputs["rgba"], np.dstack((rgb, a8)))
    if "composite" in outputs:
        write_png(outputs["composite"], composite(rgb, alpha, background.fill(*rgb.shape[:2])))


class _VideoWriter:
    """H.264 (yuv420p) MP4 at a constant rate; odd sizes are padded by one edge pixel."""

    def __init__(self, path: str, rate: Fraction, width: int, height: int):
        self.container = av.open(path, mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": VIDEO_CRF}
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        pad = ((0, self.stream.height - rgb.shape[0]),
               (0, self.stream.width - rgb.shape[1]), (0, 0))
        frame = av.VideoFrame.from_ndarray(np.pad(rgb, pad, mode="edge"), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


def _frames(container, stream, width: int, height: int, batch: int) -> Iterator[np.ndarray]:
    chunk = []
    for frame in container.decode(stream):  # size changes mid-stream are scaled to the first
        chunk.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
        if len(chunk) == batch:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def _matte_video(matter: Matter, job: _Job, outputs: dict[str, Path], background: Background,
                 batch: int, progress: bool) -> int:
    """Write the matte (and composite) videos of `job`; returns the number of frames."""
    with av.open(str(job.src)) as container:
        if not container.streams.video:
            raise UserError(f"{job.src}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        width, height = stream.codec_context.width, stream.codec_context.height
        fill = background.fill(height, width)
        kinds = list(outputs)
        written = []

        def encode(tmps: list[str]) -> None:
            writers = dict(zip(kinds, (_VideoWriter(t, rate, width, height) for t in tmps)))
            bar = tqdm(total=stream.frames or None, unit="frame", desc=job.src.name,
                       leave=False, disable=not progress)
            try:
                for rgb in _frames(container, stream, width, height, batch):
                    alphas = matter(rgb)
                    for frame, alpha in zip(rgb, alphas):
                        if "alpha" in writers:
                            gray = alpha_to_uint8(alpha)[..., None]
                            writers["alpha"].write(np.repeat(gray, 3, axis=2))
                        if "composite" in writers:
                            writers["composite"].write(composite(frame, alpha, fill))
                    written.append(len(rgb))
                    bar.update(len(rgb))
            finally:
                bar.close()
                for writer in writers.values():
                    writer.close()
            if not written:
                raise UserError(f"{job.src}: no decodable frames")

        _write_all([outputs[k] for k in kinds], encode)
        return sum(written)


def matte_files(matter: Matter, inputs: Iterable[str | Path], out_dir: str | Path,
                save: Iterable[str] = ("alpha",), background: Background | None = None,
                batch: int | None = None, progress: bool = True, skip_existing: bool = False,
                on_error: Callable[[Path, str], None] | None = None) -> MatteSummary:
    """Matte every image and video in `inputs` (files or folders) into `out_dir`.

    A file that cannot be read is passed to `on_error(path, message)`, recorded in the
    summary's `failed`, and skipped; the others are still processed. `batch` frames of a
    video go through the runtime together (default: 1 on CPU, 8 on a GPU).
    """
    save = tuple(dict.fromkeys(save))
    unknown = [k for k in save if k not in SAVE_KINDS]
    if unknown or not save:
        raise UserError(f"--save {','.join(save)}: choose from {', '.join(SAVE_KINDS)}")
    if batch is None:
        batch = GPU_BATCH if matter.runtime.on_gpu else CPU_BATCH
    if batch < 1:
        raise UserError(f"--batch {batch}: must be at least 1")
    summary = MatteSummary()

    def fail(path: Path, message: str) -> None:
        summary.failed.append((path, message))
        if on_error:
            on_error(path, message)

    out_dir = Path(out_dir)
    jobs = plan_jobs(inputs, out_dir, fail)
    _refuse_overwriting_inputs(jobs, save)
    background = background or Background()
    for job in tqdm(jobs, unit="file", desc="matte", disable=not progress):
        outputs = job.outputs(save)
        if not outputs or (skip_existing and all(p.is_file() for p in outputs.values())):
            summary.skipped.append(job.src)
            continue
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if job.is_video:
                summary.frames += _matte_video(matter, job, outputs, background, batch, progress)
            else:
                _matte_image(matter, job, outputs, background)
                summary.images += 1
        except UserError as e:
            fail(job.src, str(e))
            continue
        except (av.error.FFmpegError, OSError) as e:  # undecodable video, unwritable output
            fail(job.src, f"{job.src}: cannot be processed ({type(e).__name__}: {e})")
            continue
        summary.written += outputs.values()
    return summary
