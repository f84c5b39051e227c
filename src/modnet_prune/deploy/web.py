"""A static web page that mattes with ONNX files in the browser, and a local server for it.

    build_site(["teacher.onnx", "student.onnx"], "site/")   # index.html, app.mjs, ort/, models/
    server = make_server("site/", port=8000)                 # COOP/COEP: WASM threads work
    server.serve_forever()

The page (web_static/app.mjs) runs each model with onnxruntime-web under the inference
protocol recorded in the file's metadata, shows matte, composite and latency side by side,
and refuses files that lack that metadata with a message on the page.

onnxruntime-web is pinned in web_static/package.json + package-lock.json and installed by
`npm ci` into web_static/node_modules (the Makefile's `venv` target does it; a wheel built
afterwards ships the files). A site gets its own copy: nothing is fetched from a CDN.
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from ..data.images import write_png
from ..data.synthetic import render_portrait
from ..errors import UserError

STATIC = Path(__file__).with_name("web_static")
PAGE_FILES = ("index.html", "app.mjs", "style.css")
ORT_PACKAGE = STATIC / "node_modules" / "onnxruntime-web"
# The WASM build (SIMD + threads), and the WebGPU build with its own WASM fallback: the page
# fetches one of the two builds, by what the browser supports.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
             "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs",
             "ort-wasm-simd-threaded.asyncify.wasm")
SITE_JSON = "site.json"
# Headless Chromium for driving the page (tests/test_web.py, benchmarks/web_page.py); without
# the background-networking flags Chromium keeps dialling out, and a closed network refuses it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")
SAMPLE_SEEDS = (7_000_003, 7_000_011, 7_000_027)  # synthetic portraits, outside training seeds
SAMPLE_SIZE = 512


@dataclass
class SiteReport:
    out: str
    models: list[dict]
    onnxruntime_web: str
    bytes: int  # the whole folder; a browser fetches the page, one ORT build and the models


def ort_missing() -> str | None:
    """One line on how to install onnxruntime-web when its files are not here, else None."""
    missing = [f for f in ORT_FILES if not (ORT_PACKAGE / "dist" / f).is_file()]
    if not missing:
        return None
    return (f"onnxruntime-web is not installed ({missing[0]} missing): run "
            f"`npm ci --prefix {STATIC}` (or `make venv`)")


def _ort_dist() -> tuple[Path, str]:
    """onnxruntime-web's dist folder and version."""
    if reason := ort_missing():
        raise UserError(reason)
    version = json.loads((ORT_PACKAGE / "package.json").read_text())["version"]
    return ORT_PACKAGE / "dist", version


def _check_models(models: list[str | Path]) -> list[Path]:
    if not models:
        raise UserError("--models: give at least one .onnx file")
    paths = [Path(m) for m in models]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    names = [p.name for p in paths]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise UserError(f"two models are named {clash}: the page names models by file name; "
                        "rename one")
    return paths


def _writable_out(out: Path) -> None:
    """`out` may be new, empty, or a site this function wrote (then it is replaced)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_JSON).is_file():
        raise UserError(f"{out}: folder is not empty and holds no site from `modnet-prune web`; "
                        "choose a new --out")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")


def build_site(models: list[str | Path], out: str | Path) -> SiteReport:
    """Write the page, onnxruntime-web, the models and sample photos into folder `out`.

    The site is assembled beside `out` and renamed into place, so an interrupted build
    leaves the previous site (or nothing) behind.
    """
    paths, out = _check_models(models), Path(out)
    dist, version = _ort_dist()
    _writable_out(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in PAGE_FILES:
            shutil.copyfile(STATIC / name, staging / name)
        (staging / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copyfile(dist / name, staging / "ort" / name)
        (staging / "models").mkdir()
        entries = []
        for path in paths:
            shutil.copyfile(path, staging / "models" / path.name)
            entries.append({"name": path.stem, "file": f"models/{quote(path.name)}",
                            "bytes": path.stat().st_size})
        (staging / "samples").mkdir()
        samples = []
        for seed in SAMPLE_SEEDS:
            name = f"samples/portrait-{seed}.png"
            write_png(staging / name, render_portrait(seed, SAMPLE_SIZE)[0])
            samples.append(name)
        site = {"onnxruntime_web": version, "models": entries, "samples": samples}
        (staging / SITE_JSON).write_text(json.dumps(site, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the site from other users' servers
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return SiteReport(out=str(out), models=entries, onnxruntime_web=version, bytes=size)


def _replace(new: Path, out: Path) -> None:
    """Rename `new` to `out`; an old site there is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.rename(old / "site")
    new.rename(out)
    if old:
        shutil.rmtree(old)


# ------------------------------------------------------------------------- serving

MAX_CONNECTIONS = 32  # served at once; more wait in the listen queue
REQUEST_TIMEOUT_S = 30  # an idle or stalled connection is dropped after this


class _SiteHandler(SimpleHTTPRequestHandler):
    """Files of the site only (no listings), with the headers that cross-origin isolation
    needs: without them browsers withhold SharedArrayBuffer and ORT runs one thread."""

    timeout = REQUEST_TIMEOUT_S
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm",
                      ".onnx": "application/octet-stream"}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def list_directory(self, path):
        self.send_error(404, "no listing")
        return None

    def log_message(self, format, *args) -> None:  # quiet: the page shows what matters
        pass


class SiteServer(ThreadingHTTPServer):
    """A loopback-only HTTP server for one site folder, at most MAX_CONNECTIONS at a time."""

    daemon_threads = True

    def __init__(self, directory: Path, port: int):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        handler = functools.partial(_SiteHandler, directory=str(directory))
        try:
            super().__init__(("127.0.0.1", port), handler)
        except OSError as e:
            raise UserError(f"cannot listen on 127.0.0.1:{port} ({e.strerror})") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def handle_error(self, request, client_address) -> None:
        """A browser that leaves mid-download is normal; anything else gets socketserver's
        report."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request, client_address) -> None:
        self._slots.acquire()
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(directory: str | Path, port: int = 8000) -> SiteServer:
    """A server for a folder written by `build_site` (port 0: any free port)."""
    directory = Path(directory)
    if not (directory / SITE_JSON).is_file() or not (directory / "index.html").is_file():
        raise UserError(f"{directory}: not a site written by `modnet-prune web`")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: must be 0..65535")
    return SiteServer(directory, port)
