"""Everything the tests share: small architectures and models, generic CNNs for the graph
and pruning tests, training settings, tiny pipeline recipes, and ways to run the CLI.
Tests import from here only, never from each other."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.model.arch import HEAD_CONVS
from modnet_prune.train import TrainConfig

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


# --- MODNet architectures, smallest first ----------------------------------------------
def tiny_arch() -> mp.Arch:
    """Every stage, tap and concatenation of the official structure, with widths of 8 to
    32 so that it runs in milliseconds."""
    return mp.Arch(stem=8, stages=(8, 8, 8, 16, 16, 16, 16), expansion=(16,) * 16, last=32,
                   se_hidden=8, heads=dict.fromkeys(HEAD_CONVS, 8))


def tiny_model() -> mp.MODNet:
    return mp.MODNet(tiny_arch()).eval()


def divided_arch(div: int = 4) -> mp.Arch:
    """The official structure at 1/div of every width (fast on 2 cores)."""
    official = mp.Arch()
    return mp.Arch(stem=official.stem // div,
                   stages=tuple(max(2, w // div) for w in official.stages),
                   expansion=tuple(w // div for w in official.expansion),
                   last=official.last // div, se_hidden=official.se_hidden // div,
                   heads={k: max(2, w // div) for k, w in official.heads.items()})


def small_arch() -> mp.Arch:
    """The official structure at a quarter of most widths: every stage and coupling
    stays, tracing and export stay exercised, and a pipeline runs in seconds."""
    official = mp.Arch()
    return mp.Arch(stem=16, stages=tuple(max(8, s // 2) for s in official.stages),
                   expansion=tuple(e // 4 for e in official.expansion), last=256, se_hidden=64,
                   heads={k: max(8, w // 2) for k, w in official.heads.items()})


def same_state(a: nn.Module, b: nn.Module) -> bool:
    """The same tensors under the same names, to the bit."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def randomise_bn(model: mp.MODNet) -> mp.MODNet:
    """Non-trivial BN statistics, so a mis-exported BN cannot pass as identity."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.8, 1.2)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


# --- generic CNNs: residual adds, a U-Net with the image concatenated, grouped convs, SE --
class ResidualCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16)) for _ in range(2))
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.head(x)


class UNet(nn.Module):
    """Skip concatenations, and the raw image concatenated at offset 0 of the decoder."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
        self.dec2 = nn.Sequential(nn.Conv2d(64, 24, 3, padding=1), nn.ReLU())
        self.dec1 = nn.Sequential(nn.Conv2d(3 + 24 + 16, 16, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(16, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        m = F.interpolate(self.mid(e2), scale_factor=2.0, mode="bilinear", align_corners=False)
        d2 = F.interpolate(self.dec2(torch.cat([m, e2], 1)), scale_factor=2.0, mode="nearest")
        return torch.sigmoid(self.out(self.dec1(torch.cat([x, d2, e1], dim=1))))


class GroupedCNN(nn.Module):
    """A depthwise conv with channel multiplier 2 and a grouped conv (4 groups)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.BatchNorm2d(32), nn.ReLU6())
        self.grouped = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1, groups=4), nn.BatchNorm2d(48), nn.ReLU())
        self.head = nn.Conv2d(48, 1, 1)

    def forward(self, x):
        return self.head(self.grouped(self.dw(self.conv(x))))


class SECNN(nn.Module):
    """Squeeze-excitation with .view(b, c, 1, 1), then flatten of a 4x4 map into a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc1, self.fc2 = nn.Linear(32, 8), nn.Linear(8, 32)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(nn.Linear(32 * 16, 24), nn.ReLU(), nn.Linear(24, 10))

    def forward(self, x):
        y = self.conv(x)
        b, c = y.size(0), y.size(1)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3))))))
        y = y * w.view(b, c, 1, 1)
        return self.classifier(torch.flatten(self.pool(y), 1))


# --- training ---------------------------------------------------------------------------
def cfg(**kw) -> TrainConfig:
    """A few steps at 64x64 in this process, logging and checkpointing often."""
    base = dict(size=64, batch_size=4, steps=6, lr=0.01, workers=0, log_every=1,
                checkpoint_every=3, schedule="cosine")
    return TrainConfig(**{**base, **kw})


# --- pipelines ---------------------------------------------------------------------------
def make_teacher(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = folder / "teacher.safetensors"
    mp.save(mp.MODNet(small_arch()), path)
    return path


def tiny_recipe(teacher: Path, **changes) -> dict:
    recipe = {
        "name": "tiny", "description": "test run", "teacher": str(teacher), "seed": 0,
        "prune": {"method": "target_macs", "target_macs": 0.5, "iterations": 2, "round_to": 4},
        "recalibrate_bn": 1,
        "finetune": {"samples": 32, "batch_size": 8, "eval_every_samples": 8, "workers": 0},
        "distill": {"matte": 1.0, "lr8x": 1.0},
        "data": {"train": "synthetic:32@64+seed0", "eval": "synthetic:4@64+seed5000"},
        "sizes": {"train": 64, "eval": 64, "benchmark": 64},
        "benchmark": {"repeat": 2, "warmup": 1, "threads": 1},
        "report": {"samples": 2},
    }
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(section), dict):
            recipe[section] = {**recipe[section], **value}
        else:
            recipe[section] = value
    return recipe


def write_recipe(folder: Path, recipe: dict, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# --- the command line ----------------------------------------------------------------------
def run_cli(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI in this process (no interpreter start-up); same result shape as cli_process."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def cli_process(*args, **kw) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (for signals, and what a user sees)."""
    return subprocess.run([sys.executable, "-m", "modnet_prune", *args], env=ENV,
                          capture_output=True, text=True, timeout=300, **kw)


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           str(nproc), "-m", "modnet_prune", *args], env=ENV,
                          capture_output=True, text=True, timeout=400)
