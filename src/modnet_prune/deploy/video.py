"""Video files for matting: decoding frames in batches, encoding H.264 MP4s, our own outputs.

    with VideoReader("clip.mp4") as video:
        writer = VideoWriter("clip_alpha.mp4", video.rate, video.width, video.height)
        for frames in video.batches(8):           # (n, H, W, 3) uint8 RGB
            ...
        video.check_complete()                    # frames read == frames the file declares

Ctrl-C and SIGTERM are checked between frames, so a long video stops within one frame's
work (PyAV's threaded decoder would otherwise hold them back until it drains) and the
caller's atomic writes clean up their temp files.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import av
import numpy as np

from ..data.video import VIDEO_SUFFIXES  # noqa: F401 (the suffixes matte reads, one home)
from ..errors import UserError

VIDEO_CRF = "16"  # H.264 quality: matte edges are worth more than file size
# Container comment of every video we write: tells our outputs from a user's files.
OUR_COMMENT = "written by modnet-prune"


def is_our_video(path) -> bool:
    """True when `path` is a video this tool wrote (its container comment says so)."""
    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == OUR_COMMENT
    except (av.error.FFmpegError, OSError):
        return False


@contextmanager
def _signals_between_frames() -> Iterator[list[int]]:
    """SIGINT/SIGTERM only set a flag; the frame loop raises KeyboardInterrupt at the next
    frame. A second Ctrl-C raises at once."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handle(signum, _frame):
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class VideoReader:
    """The first video stream of a file, decoded to RGB frames at its first frame's size."""

    def __init__(self, path):
        self.path = path
        self.container = av.open(str(path))
        if not self.container.streams.video:
            self.container.close()
            raise UserError(f"{path}: no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self.width = self.stream.codec_context.width
        self.height = self.stream.codec_context.height
        self.declared = self.stream.frames or None  # from the container index; may be absent
        self.read = 0

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """(n <= batch, H, W, 3) uint8 RGB; size changes mid-stream are scaled to the first."""
        chunk = []
        with _signals_between_frames() as caught:
            for frame in self.container.decode(self.stream):
                if caught:
                    raise KeyboardInterrupt
                chunk.append(frame.reformat(width=self.width, height=self.height,
                                            format="rgb24").to_ndarray())
                self.read += 1
                if len(chunk) == batch:
                    yield np.stack(chunk)
                    chunk = []
            if caught:
                raise KeyboardInterrupt
        if chunk:
            yield np.stack(chunk)

    def check_complete(self) -> None:
        """Refuse a file that gave fewer (or more) frames than it declares: truncated or
        damaged, and a matte video of part of it would pass for the whole."""
        if self.read == 0:
            raise UserError(f"{self.path}: no decodable frames")
        if self.declared and self.read != self.declared:
            raise UserError(f"{self.path}: decoded {self.read} of the {self.declared} frames the "
                            "file declares (truncated or damaged?); nothing written")


class VideoWriter:
    """H.264 MP4 at a constant rate and the frames' own size: yuv420p (plays everywhere)
    when both sides are even, else yuv444p, since 4:2:0 cannot hold an odd size."""

    def __init__(self, path: str, rate: Fraction, width: int, height: int):
        self.container = av.open(path, mode="w", format="mp4")
        self.container.metadata["comment"] = OUR_COMMENT
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if not (width % 2 or height % 2) else "yuv444p"
        self.stream.options = {"crf": VIDEO_CRF}
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self, flush: bool = True) -> None:
        """Finish the file; `flush=False` drops the frames the encoder still holds (its
        look-ahead: seconds of work), for a file that is about to be deleted anyway."""
        try:
            if flush:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()


def odd_size_note(path, width: int, height: int) -> str | None:
    """What to tell the user when a video's size forces the less common 4:4:4 encoding."""
    if not (width % 2 or height % 2):
        return None
    return (f"{path} is {width}x{height}: its mattes keep that size in H.264 4:4:4 (4:2:0, "
            "which every player takes, needs even sides); some browsers and QuickTime cannot "
            "play 4:4:4")
