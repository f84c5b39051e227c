"""Video frames as training images: sample times at a given rate, one decoded frame each.

A video of duration D sampled at R frames per second gives the times 0, 1/R, 2/R, ... < D
(measured from the stream's first timestamp); each time reads the first frame shown at or
after it, so 2 fps of a 10 fps clip are frames 0, 5, 10, ...

Every read seeks to the keyframe before its time and decodes from there, so it costs up to
one keyframe interval of decoding (for long runs on long, high-resolution videos, frames
extracted once, e.g. with `ffmpeg -vf fps=2`, load faster as an image folder).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv")


def _open(path: Path):
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise UserError(f"{path}: not a readable video ({type(e).__name__})") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: no video stream")
    return container, container.streams.video[0]


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def sample_times(path: str | Path, fps: float) -> list[float]:
    """Seconds (from the first frame) at which `path` is sampled at `fps` frames per second."""
    container, stream = _open(Path(path))
    with container:
        duration = _duration(container, stream)
        if duration is None:  # no header duration: count the frames (slow, but exact)
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            duration = sum(1 for _ in container.decode(stream)) / float(rate)
    count = int(np.ceil(duration * fps - 1e-9))
    return [k / fps for k in range(max(count, 0))]


def read_frame(path: str | Path, seconds: float) -> np.ndarray:
    """uint8 RGB (H, W, 3): the first frame shown at or after `seconds` (the last frame
    when the video ends before it)."""
    container, stream = _open(Path(path))
    stream.thread_type = "AUTO"
    with container:
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        target = start + seconds - 0.5 / rate  # half a frame of slack for rounded timestamps
        if seconds > 0:
            container.seek(int(max(target, start) / stream.time_base), stream=stream,
                           backward=True, any_frame=False)
        last = None
        try:
            for frame in container.decode(stream):
                last = frame
                if frame.time is None or frame.time >= target:
                    break
        except av.error.FFmpegError as e:
            raise UserError(f"{path}: undecodable at {seconds:.2f} s ({type(e).__name__})") from None
        if last is None:
            raise UserError(f"{path}: no decodable frame at {seconds:.2f} s")
        return last.to_ndarray(format="rgb24")
