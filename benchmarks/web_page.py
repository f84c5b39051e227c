"""The web page's latency in headless Chromium beside ONNX Runtime's in Python, same files.

    python benchmarks/web_page.py --models teacher.onnx student.onnx --screenshot docs/web-page.png

Builds a site from the models (`modnet-prune web`), serves it on loopback, opens it in
Debian's Chromium (Playwright, no browser download) and lets the page matte its first
sample (512x512, so every model runs at 512x512). Then, `--rounds` times, alternately: the
page mattes the sample again (`--runs` timed runs per model, interleaved by the page), and
ONNX Runtime in this process times the same files on the same input, interleaved, with as
many threads as the page uses. Speed-ups are ratios of medians, as the page shows them.
Also printed: how long after opening the page its first matte appeared, what it
downloaded, and each model's max |page alpha - ONNX Runtime alpha| on the sample.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from modnet_prune.data.images import read_image  # noqa: E402
from modnet_prune.data.protocol import to_input  # noqa: E402
from modnet_prune.deploy import web  # noqa: E402
from modnet_prune.deploy.matting import Matter  # noqa: E402
from modnet_prune.deploy.runtime import OnnxRuntime  # noqa: E402
from modnet_prune.measure.benchmark import interleaved_times  # noqa: E402

TIMEOUT_MS = 600_000


def page_latencies(page) -> list[list[float]]:
    return page.evaluate("window.modnetPage.models.map((m) => m.latencies)")


def page_alpha_diff(page, index: int, expected: np.ndarray) -> float:
    """max |page alpha - ONNX Runtime alpha| of model `index` on the image the page shows."""
    alpha = page.evaluate(f"Array.from(window.modnetPage.models[{index}].alpha)")
    return float(np.abs(np.array(alpha, np.float32).reshape(expected.shape) - expected).max())


def matte_sample_again(page) -> None:
    done = page.evaluate("window.modnetPage.mattes")
    page.click("#samples img")
    page.wait_for_function(f"window.modnetPage.mattes > {done}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per model per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--screenshot", help="PNG of the page after its first matte")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        site = web.build_site(args.models, Path(tmp) / "site")
        server = web.make_server(site.out, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        browser = p.chromium.launch(executable_path=web.CHROMIUM, args=list(web.CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1100, "height": 680})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        page.fill("#runs", str(args.runs))
        page.wait_for_function("window.modnetPage.mattes >= 1 || window.modnetPage.error")
        first = page.evaluate("""(p => ({ms: p.firstMatteMs, bytes: p.downloadBytes,
            threads: p.threads, backend: p.backend, errors: p.models.map((m) => m.error)})
        )(window.modnetPage)""")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)

        samples = json.loads((Path(site.out) / web.SITE_JSON).read_text())["samples"]
        sample = read_image(Path(site.out) / samples[0])  # the one the page mattes on load
        x = to_input(sample).numpy()
        runtimes = [OnnxRuntime(m, threads=first["threads"]) for m in args.models]
        alpha_diffs = [page_alpha_diff(page, k, Matter(rt)(sample))
                       for k, rt in enumerate(runtimes)]
        browser_ms, python_ms = [[] for _ in args.models], [[] for _ in args.models]
        for _ in range(args.rounds):
            matte_sample_again(page)
            for record, times in zip(browser_ms, page_latencies(page)):
                record += times
            python_round = interleaved_times(runtimes, x, args.runs, warmup=1, progress=False)
            for record, times in zip(python_ms, python_round):
                record += times
        browser.close()
        server.shutdown()

    rows = []
    for k, model in enumerate(args.models):
        b, o = float(np.median(browser_ms[k])), float(np.median(python_ms[k]))
        rows.append({"model": Path(model).name, "page_ms": b, "onnxruntime_ms": o,
                     "page_speedup": float(np.median(browser_ms[0])) / b,
                     "onnxruntime_speedup": float(np.median(python_ms[0])) / o,
                     "max_abs_alpha_diff": alpha_diffs[k]})
    result = {"input": list(x.shape), "threads": first["threads"], "backend": first["backend"],
              "first_matte_s": first["ms"] / 1000, "downloaded_mb": first["bytes"] / 1e6,
              "site_mb": site.bytes / 1e6, "runs": args.runs * args.rounds,
              "errors": first["errors"], "models": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
