"""The web page, end to end in headless Chromium: its mattes equal ONNX Runtime's in Python.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), driven by Playwright without
a browser download. A missing browser fails these tests with the reason; it never skips.
"""
import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch

from modnet_prune.cli import main
from modnet_prune.data.images import alpha_to_uint8, write_png
from modnet_prune.data.synthetic import render_portrait
from modnet_prune.deploy import web
from modnet_prune.deploy.matting import Matter
from modnet_prune.deploy.onnx_export import export_onnx
from modnet_prune.deploy.runtime import OnnxRuntime
from modnet_prune.errors import UserError
from helpers import tiny_model

PAGE_TIMEOUT_MS = 120_000  # a busy 2-core machine compiles the 14 MB WASM slowly
# a synthetic camera (640x480 test pattern), and no permission prompt
FAKE_WEBCAM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
HEIGHT, WIDTH = 90, 130  # not multiples of 32, not square: the protocol resizes both ways


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two tiny exported MODNets, a corrupt file and a foreign ONNX, built into a site."""
    root = tmp_path_factory.mktemp("web")
    for seed, name in ((1, "tiny_a.onnx"), (2, "tiny_b.onnx")):
        torch.manual_seed(seed)
        export_onnx(tiny_model(), root / name)
    (root / "corrupt.onnx").write_bytes(b"\x08\x07 this is not a protobuf" * 20)
    with warnings.catch_warnings():  # an ONNX file without our metadata: not a MODNet to us
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 32, 32),),
                          str(root / "foreign.onnx"), dynamo=False, opset_version=17)
    image = render_portrait(5, 160)[0][:HEIGHT, :WIDTH]
    write_png(root / "photo.png", np.ascontiguousarray(image))
    models = [root / n for n in ("tiny_a.onnx", "tiny_b.onnx", "corrupt.onnx", "foreign.onnx")]
    web.build_site(models, root / "site")
    server = web.make_server(root / "site", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, server.url, image
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e .[dev]` (or run .ci/run)")
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=web.CHROMIUM, args=[
                *web.CHROMIUM_ARGS, *FAKE_WEBCAM_ARGS])
        except Exception as e:  # Playwright's launch errors have no narrower public type
            pytest.fail(f"cannot start {web.CHROMIUM} (install it: `apt-get install -y chromium`, "
                        f"or run .ci/run): {str(e).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def matted(site, browser):
    """The page after it has matted photo.png through its own file input."""
    root, url, _ = site
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(url)
    page.wait_for_function("window.modnetPage.loaded && window.modnetPage.mattes >= 1")
    page.set_input_files("#photo", str(root / "photo.png"))
    page.wait_for_function(f"window.modnetPage.mattes === 2"  # the sample's, then the photo's
                           f" && window.modnetPage.image.width === {WIDTH}"
                           f" && window.modnetPage.image.height === {HEIGHT}")
    yield page
    page.close()


@pytest.mark.slow  # the page: one site, browser and load for all (~1 min on 2 busy cores)
def test_page_mattes_equal_onnxruntime(site, matted):
    root, _, image = site
    for index, name in enumerate(("tiny_a", "tiny_b")):
        expected = Matter(OnnxRuntime(root / f"{name}.onnx"))(image)
        alpha = np.array(matted.evaluate(f"Array.from(window.modnetPage.models[{index}].alpha)"),
                         np.float32).reshape(HEIGHT, WIDTH)
        assert np.abs(alpha - expected).max() <= 1 / 255
        shown = matted.evaluate(f"""() => {{
            const c = document.querySelectorAll('.model')[{index}].querySelector('canvas.matte');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
        }}""")
        shown = np.array(shown, np.int16).reshape(HEIGHT, WIDTH, 4)[..., 0]
        assert np.abs(shown - alpha_to_uint8(expected)).max() <= 1


@pytest.mark.slow
def test_page_shows_latency_speedup_and_download_size(site, matted):
    cards = matted.locator(".model")
    latency_a, latency_b = cards.nth(0).locator(".latency").inner_text(), \
        cards.nth(1).locator(".latency").inner_text()
    pattern = r"\d+\.\d ms per inference at 512×736 \(median of 5\)"
    assert re.search(pattern, latency_a) and "reference" in latency_a
    assert re.search(pattern, latency_b) and re.search(r"\d\.\d\d× vs tiny_a", latency_b)
    status = matted.locator("#status").inner_text()
    assert re.search(r"downloaded \d+\.\d MB", status) and "first matte" in status
    # cross-origin isolated by the server's headers, hence more than one WASM thread
    assert matted.evaluate("crossOriginIsolated") is True
    assert matted.evaluate("window.modnetPage.threads") == matted.evaluate(
        "navigator.hardwareConcurrency")
    assert "WASM SIMD" in status and matted.evaluate("window.modnetPage.backend") == "wasm"
    downloaded = matted.evaluate("window.modnetPage.downloadBytes")
    root = site[0]
    wasm = (root / "site/ort/ort-wasm-simd-threaded.wasm").stat().st_size
    assert downloaded >= wasm + sum((root / f"tiny_{k}.onnx").stat().st_size for k in "ab")


@pytest.mark.slow
def test_page_reports_bad_models(matted):
    cards = matted.locator(".model")
    corrupt, foreign = cards.nth(2).locator(".error"), cards.nth(3).locator(".error")
    assert corrupt.is_visible() and foreign.is_visible()
    assert corrupt.inner_text().startswith("corrupt: ")
    assert "not a MODNet exported by modnet-prune" in foreign.inner_text()
    for index in (2, 3):  # nothing drawn for them
        assert matted.evaluate(f"window.modnetPage.models[{index}].alpha") is None
    assert not cards.nth(0).locator(".error").is_visible()


@pytest.mark.slow
def test_webcam_frames_are_matted(matted):
    done = matted.evaluate("window.modnetPage.mattes")
    matted.click("#webcam")
    matted.wait_for_function(f"window.modnetPage.mattes >= {done + 2}")  # two frames at least
    matted.click("#webcam")
    assert matted.evaluate("[window.modnetPage.image.width, window.modnetPage.image.height]") == \
        [640, 480]
    latency = matted.locator(".model").nth(1).locator(".latency").inner_text()
    assert re.search(r"ms per inference at 480×640 \(median of \d+\)", latency)
    assert matted.locator("#webcam").inner_text() == "Use the webcam"


def test_server_sends_isolation_headers_and_no_listings(site):
    _, url, _ = site
    with urllib.request.urlopen(url + "ort/ort-wasm-simd-threaded.wasm") as response:
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert response.headers["Content-Type"] == "application/wasm"
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(url + "models/")
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(url + "../tiny_a.onnx")  # the folder above the site
    assert url.startswith("http://127.0.0.1:")


def test_build_site_refuses_and_replaces(site, tmp_path, monkeypatch):
    root = site[0]
    model = root / "tiny_a.onnx"
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="not empty and holds no site"):
        web.build_site([model], tmp_path / "keep")
    assert (tmp_path / "keep" / "mine.txt").read_text() == "precious"
    with pytest.raises(UserError, match="two models are named"):
        web.build_site([model, tmp_path / "keep" / ".." / ".." / root.name / "tiny_a.onnx"],
                       tmp_path / "new")
    web.build_site([model], tmp_path / "again")
    web.build_site([root / "tiny_b.onnx"], tmp_path / "again")  # an old site is replaced
    assert sorted(p.name for p in (tmp_path / "again" / "models").iterdir()) == ["tiny_b.onnx"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(UserError, match="not a site written by"):
        web.make_server(tmp_path / "keep", 0)
    monkeypatch.setattr(web, "ORT_PACKAGE", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"onnxruntime-web is not installed .* run `npm ci --prefix"):
        web.build_site([model], tmp_path / "other")


def test_cli_web_and_serve(site, tmp_path, capsys):
    root = site[0]
    assert main(["web", "--models", str(root / "tiny_a.onnx"), "--out", str(tmp_path / "s"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models"] == [{"name": "tiny_a", "file": "models/tiny_a.onnx",
                                 "bytes": (root / "tiny_a.onnx").stat().st_size}]
    assert main(["web", "--models", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"modnet-prune web: error: {tmp_path / 'missing.onnx'}: no such file"]
    # serve: prints its URL, then serves the site until stopped
    server = subprocess.Popen([sys.executable, "-m", "modnet_prune", "serve", str(tmp_path / "s"),
                               "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline()).group(0)
        with urllib.request.urlopen(url + "site.json") as response:
            assert json.loads(response.read())["models"][0]["name"] == "tiny_a"
    finally:
        server.terminate()
        server.wait(timeout=30)
