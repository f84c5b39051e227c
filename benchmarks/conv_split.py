"""One conv per IBNorm part (deploy/conv_split.py): fp32 and int8, with and without, side by side.

    PYTHONPATH=src python benchmarks/conv_split.py [--repeat 30] [--threads 2] [--size 512]

The shipped teacher and its one-shot `prune(target_macs=0.25)` (latency depends on the widths
only) are exported as `export` writes them (fused graph). Per model, five files run
interleaved in one ONNX Runtime process: the fp32 export; the fp32 export with its convs split
(parts of >= 16 channels, as `quantize` does); and `quantize_graph` of the export (one random
calibration image: ranges change neither graph nor speed) with no conv split, with parts of
>= 16 channels split (what `quantize` writes), and with every part split. The rewrite is exact,
so the five compute the same matte (int8 up to quantization). Prints one JSON row per file:
speed-up over the fp32 export by fastest rounds and by the median of per-round ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from modnet_prune.deploy import conv_split  # noqa: E402
from modnet_prune.deploy.onnx_export import export_onnx  # noqa: E402
from modnet_prune.deploy.quantize import quantize_graph  # noqa: E402
from modnet_prune.deploy.runtime import OnnxRuntime  # noqa: E402
from modnet_prune.measure.benchmark import fastest_ratio, interleaved_times, pair_ratio  # noqa: E402
from modnet_prune.model.io import load  # noqa: E402
from modnet_prune.prune import prune  # noqa: E402

TEACHER = Path(__file__).resolve().parent.parent / "models" / "modnet-synthetic.safetensors"
NEVER, ALWAYS = 1 << 30, 1  # MIN_PART_CHANNELS that split no part / every part


def variants(fp32: bytes) -> dict[str, bytes]:
    """name -> ONNX bytes of the five files described in the module doc."""
    calibration = [np.random.default_rng(1).uniform(-1, 1, (1, 3, 128, 128)).astype(np.float32)]
    split = onnx.load_from_string(fp32)
    conv_split.split_convs(split)
    files = {"fp32": fp32, "fp32, split (>= 16)": split.SerializeToString()}
    default = conv_split.MIN_PART_CHANNELS
    for name, threshold in (("int8, not split", NEVER), (f"int8, split (>= {default})", default),
                            ("int8, every part split", ALWAYS)):
        conv_split.MIN_PART_CHANNELS = threshold
        try:
            files[name] = quantize_graph(fp32, calibration)
        finally:
            conv_split.MIN_PART_CHANNELS = default
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    teacher = load(TEACHER).float().eval()
    models = {"teacher": teacher, "25% student": prune(teacher, target_macs=0.25).model}
    with tempfile.TemporaryDirectory(prefix="conv-split-") as tmp:
        for model_name, model in models.items():
            path = Path(tmp) / "m.onnx"
            export_onnx(model, path, check=False)
            files = variants(path.read_bytes())
            runtimes = [OnnxRuntime(data, threads=args.threads) for data in files.values()]
            times = interleaved_times(runtimes, x, args.repeat, warmup=3, progress=False)
            for name, t in zip(files, times):
                print(json.dumps({"model": model_name, "file": name, "threads": args.threads,
                                  "size": args.size, "median_ms": float(np.median(t)),
                                  "speedup_fastest": fastest_ratio(times[0], t),
                                  "speedup_median_pair": pair_ratio(times[0], t)}), flush=True)


if __name__ == "__main__":
    main()
