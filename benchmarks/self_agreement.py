"""How stable is a model on a dataset? Its mattes of each image vs of that image plus ±1 grey level.

    python benchmarks/self_agreement.py --checkpoint M --data SPEC [--size 128] [--seed 0]

A student distilled from a teacher cannot be expected to agree with it more closely than the
teacher agrees with itself when its input moves by one grey level. This scores the model's
mattes of the images plus a random -1/0/+1 per pixel and channel (clipped to 0..255) against
its mattes of the clean images, with `evaluate --reference`'s agreement metrics (MAD, IoU at
0.5, boundary |delta alpha|), and prints them as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402

from modnet_prune import load  # noqa: E402
from modnet_prune.data import open_source  # noqa: E402
from modnet_prune.metrics import evaluate, reference_mattes  # noqa: E402


class NoisySource:
    """`source` with one grey level of uniform noise per pixel and channel, fixed per index.
    (Not named `.source`: `evaluate` unwraps an attribute of that name.)"""

    def __init__(self, source, seed: int):
        self.clean, self.seed = source, seed
        self.description = f"{source.description} + 1 grey level of noise"
        self.labeled = False

    def __len__(self) -> int:
        return len(self.clean)

    def sample(self, index: int):
        sample = self.clean.sample(index)
        noise = np.random.default_rng((self.seed, index)).integers(-1, 2, sample.image.shape)
        image = np.clip(sample.image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return dataclasses.replace(sample, image=image, alpha=None, trimap=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load(args.checkpoint).float().eval()
    source = open_source(args.data)
    clean = reference_mattes(model, source, size=args.size)
    scores = evaluate(model, NoisySource(source, args.seed), size=args.size, reference=clean)
    print(json.dumps({k: scores[k] for k in ("count", "mad", "iou", "boundary")}, indent=2))


if __name__ == "__main__":
    main()
