"""Matting files: protocol, image modes, folder trees, videos, bad files, never touching inputs."""
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modnet_prune import save
from modnet_prune.cli import main
from modnet_prune.data.images import alpha_to_uint8, read_image
from modnet_prune.data.protocol import to_input, to_original_size
from modnet_prune.errors import UserError
from modnet_prune.deploy import Background, Matter, TorchRuntime, export_onnx, matte_files
from modnet_prune.deploy.runtime import OnnxRuntime
from helpers import tiny_model

REF = 64  # protocol reference size: small keeps the tests fast


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(2)
    return tiny_model()


@pytest.fixture(scope="module")
def matter(model):
    return Matter(TorchRuntime(model, device="cpu"), ref=REF)


def rgb_noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference_alpha(model, image, ref=REF):
    """The protocol spelled out with data/protocol.py, independently of Matter."""
    with torch.no_grad():
        matte = model(to_input(np.array(image), ref))  # writable copy: PIL arrays are read-only
    return to_original_size(matte, *image.shape[:2])[0, 0].numpy()


def write_video(path, frames, rate=12, codec="libx264", pix_fmt="yuv420p"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def video_info(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), stream.average_rate, frames


def test_matter_follows_the_protocol_and_batches(model, matter):
    image = rgb_noise(45, 67)
    alpha = matter(image)
    assert alpha.shape == (45, 67) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, reference_alpha(model, image), atol=1e-6)
    frames = np.stack([rgb_noise(45, 67, seed) for seed in range(3)])
    batched = matter(frames)
    for frame, a in zip(frames, batched):
        np.testing.assert_allclose(a, matter(frame), atol=1e-5)


def test_static_onnx_resizes_to_its_size_and_pads_the_batch(model, tmp_path):
    export_onnx(model, tmp_path / "s.onnx", static_hw=(64, 96), check=False)
    static = Matter(OnnxRuntime(tmp_path / "s.onnx"), ref=REF)
    frames = np.stack([rgb_noise(50, 70, seed) for seed in range(3)])  # batch 3 > static 1
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = to_original_size(model(F.interpolate(x, size=(64, 96), mode="area")), 50, 70)
    np.testing.assert_allclose(static(frames), expected[:, 0].numpy(), atol=1e-4)


def make_odd_images(root):
    """Grayscale, RGBA, 16-bit, EXIF-rotated JPEG and plain RGB, all at odd sizes."""
    rng = np.random.default_rng(1)
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (33, 51), dtype=np.uint8), "L").save(root / "gray.png")
    Image.fromarray(rng.integers(0, 256, (41, 37, 4), dtype=np.uint8), "RGBA").save(
        root / "nested" / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (35, 49), dtype=np.uint16)).save(
        root / "nested" / "deeper" / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display -> 43 wide, 65 high
    Image.fromarray(rgb_noise(43, 65)).save(root / "nested" / "rotated.jpg", exif=exif)
    Image.fromarray(rgb_noise(47, 69)).save(root / "plain.jpg")
    return {"gray.png": (33, 51), "nested/rgba.png": (41, 37),
            "nested/deeper/sixteen.png": (35, 49), "nested/rotated.jpg": (65, 43),
            "plain.jpg": (47, 69)}


def test_folder_tree_of_odd_images(model, matter, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    sizes = make_odd_images(src)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    summary = matte_files(matter, [src], tmp_path / "out", save=("alpha", "rgba", "composite"),
                          background=Background.parse("#3366ff"), progress=False)
    assert not summary.failed and summary.images == 5 and len(summary.written) == 15
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # untouched
    for rel, (h, w) in sizes.items():
        stem = tmp_path / "out" / rel.rsplit(".", 1)[0]
        image = read_image(src / rel)
        assert image.shape[:2] == (h, w)
        alpha = np.asarray(Image.open(f"{stem}_alpha.png"))
        assert alpha.dtype == np.uint8 and alpha.shape == (h, w)
        np.testing.assert_array_equal(alpha, alpha_to_uint8(reference_alpha(model, image)))
        rgba = np.asarray(Image.open(f"{stem}_rgba.png"))
        np.testing.assert_array_equal(rgba[..., :3], image)
        np.testing.assert_array_equal(rgba[..., 3], alpha)
        comp = np.asarray(Image.open(f"{stem}_composite.png")).astype(float)
        a = alpha[..., None] / 255.0  # saved alpha is rounded: allow 1 level
        expected = image * a + np.array([0x33, 0x66, 0xFF]) * (1 - a)
        assert np.abs(comp - expected).max() <= 1.01


@pytest.mark.parametrize("name, codec, pix_fmt, size", [
    ("clip.mp4", "libx264", "yuv420p", (46, 68)),
    ("odd.mov", "png", "rgb24", (45, 67)),  # lossless, odd size: H.264 output padded to even
])
def test_video_keeps_frame_count_and_rate(matter, tmp_path, name, codec, pix_fmt, size):
    write_video(tmp_path / name, [rgb_noise(*size, seed) for seed in range(7)], 12, codec, pix_fmt)
    Image.fromarray(rgb_noise(20, 30, 9)).save(tmp_path / "bg.png")
    summary = matte_files(matter, [tmp_path / name], tmp_path / "out", batch=3,
                          save=("alpha", "composite", "rgba"),
                          background=Background.parse(str(tmp_path / "bg.png")), progress=False)
    assert summary.frames == 7 and not summary.failed
    n_in, rate_in, decoded = video_info(tmp_path / name)
    stem = tmp_path / "out" / name.split(".")[0]
    for kind in ("alpha", "composite"):
        n_out, rate_out, out_frames = video_info(f"{stem}_{kind}.mp4")
        assert (n_out, rate_out) == (n_in, rate_in) == (7, Fraction(12))
        assert out_frames[0].shape == (46, 68, 3)
    assert not (tmp_path / "out" / f"{stem}_rgba.mp4").exists()  # no RGBA video format
    # the matte video carries the alphas of matting each decoded frame on its own
    _, _, alpha_frames = video_info(f"{stem}_alpha.mp4")
    for frame, encoded in zip(decoded, alpha_frames):
        expected = alpha_to_uint8(matter(frame))
        err = np.abs(encoded[:size[0], :size[1], 0].astype(int) - expected)
        assert err.mean() < 3  # H.264 at crf 16, limited-range round trip


def test_corrupt_file_is_reported_and_the_rest_processed(tmp_path, model, capsys):
    ckpt = tmp_path / "tiny.safetensors"
    save(model, ckpt)
    src = tmp_path / "in"
    (src / "b").mkdir(parents=True)
    Image.fromarray(rgb_noise(40, 60)).save(src / "a.png")
    (src / "b" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (src / "b" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 junk")
    Image.fromarray(rgb_noise(40, 60, 1)).save(src / "b" / "z.png")
    code = main(["matte", "--checkpoint", str(ckpt), str(src), str(tmp_path / "missing.png"),
                 "--out", str(tmp_path / "out"), "--size", str(REF), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    for name in ("broken.jpg", "broken.mp4", "missing.png"):
        assert name in err
    assert (tmp_path / "out" / "a_alpha.png").is_file()
    assert (tmp_path / "out" / "b" / "z_alpha.png").is_file()
    written = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    assert written == ["a_alpha.png", "b", "z_alpha.png"]


def test_outputs_never_overwrite_inputs(matter, tmp_path):
    Image.fromarray(rgb_noise(40, 60)).save(tmp_path / "x.png")
    Image.fromarray(rgb_noise(40, 60, 1)).save(tmp_path / "x_alpha.png")  # also an input
    before = (tmp_path / "x_alpha.png").read_bytes()
    with pytest.raises(UserError, match="is an input"):
        matte_files(matter, [tmp_path / "x.png", tmp_path / "x_alpha.png"], tmp_path,
                    progress=False)
    assert (tmp_path / "x_alpha.png").read_bytes() == before
    # an --out inside the input folder: a second run does not matte the first run's outputs
    (tmp_path / "x_alpha.png").unlink()
    for _ in range(2):
        summary = matte_files(matter, [tmp_path], tmp_path / "out", progress=False)
        assert summary.images == 1
    summary = matte_files(matter, [tmp_path], tmp_path / "out", progress=False, skip_existing=True)
    assert summary.images == 0 and summary.skipped == [tmp_path / "x.png"]


def test_background_and_option_errors(matter, tmp_path):
    assert Background.parse("red").color == (255, 0, 0)
    assert Background.parse("#00ff00").fill(2, 3).tolist() == [[[0, 255, 0]] * 3] * 2
    Image.fromarray(rgb_noise(10, 40)).save(tmp_path / "wide.png")
    assert Background.parse(str(tmp_path / "wide.png")).fill(30, 20).shape == (30, 20, 3)
    with pytest.raises(UserError, match="not a colour"):
        Background.parse("no-such-colour")
    with pytest.raises(UserError, match="choose from"):
        matte_files(matter, [tmp_path], tmp_path / "out", save=("alpha", "trimap"))
    (tmp_path / "empty").mkdir()
    summary = matte_files(matter, [tmp_path / "empty"], tmp_path / "out", progress=False)
    assert summary.failed and "no images or videos" in summary.failed[0][1]
