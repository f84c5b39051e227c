"""`analyze`: exact counts (published numbers and an independent formula), parts, JSON, sizes."""
import json
import os

import pytest
import torch

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.measure import model_costs

TRAINING_ONLY = {"lr_branch.conv_lr.layers.0", "hr_branch.conv_hr.0.layers.0",
                 "hr_branch.conv_hr.1.layers.0"}


def formula_macs(arch: mp.Arch, h: int, w: int) -> tuple[int, int]:
    """(inference, training) conv+linear MACs of MODNet written out from the architecture
    description, layer by layer: out_h * out_w * c_out * c_in / groups * k^2."""
    def conv(scale, cin, cout, k, groups=1):
        return (h // scale) * (w // scale) * cout * (cin // groups) * k * k

    # MobileNetV2: (blocks, first stride) per stage; block 1 has no expansion conv
    layout = [(1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1)]
    backbone = conv(2, 3, arch.stem, 3)
    scale, cin, block = 2, arch.stem, 0
    for stage, (blocks, first_stride) in enumerate(layout):
        for i in range(blocks):
            block += 1
            cout = arch.stages[stage]
            hidden = cin if block == 1 else arch.expansion[block - 2]
            if block > 1:
                backbone += conv(scale, cin, hidden, 1)
            scale *= first_stride if i == 0 else 1
            backbone += conv(scale, hidden, hidden, 3, groups=hidden)
            backbone += conv(scale, hidden, cout, 1)
            cin = cout
    backbone += conv(32, cin, arch.last, 1)
    enc2x, enc4x = arch.stages[0], arch.stages[1]

    g = arch.heads.__getitem__
    lr16, lr8 = g("lr_branch.conv_lr16x"), g("lr_branch.conv_lr8x")
    lr = 2 * arch.last * arch.se_hidden + conv(16, arch.last, lr16, 5) + conv(8, lr16, lr8, 5)
    t2, e2 = g("hr_branch.tohr_enc2x"), g("hr_branch.conv_enc2x")
    t4, e4 = g("hr_branch.tohr_enc4x"), g("hr_branch.conv_enc4x")
    a = [g(f"hr_branch.conv_hr4x.{i}") for i in range(3)]
    b = [g(f"hr_branch.conv_hr2x.{i}") for i in range(4)]
    hr = (conv(2, enc2x, t2, 1) + conv(4, 3 + t2, e2, 3) + conv(4, enc4x, t4, 1)
          + conv(4, e2 + t4, e4, 3) + conv(4, e4 + lr8 + 3, a[0], 3) + conv(4, a[0], a[1], 3)
          + conv(4, a[1], a[2], 3) + conv(2, a[2] + t2, b[0], 3) + conv(2, b[0], b[1], 3)
          + conv(2, b[1], b[2], 3) + conv(2, b[2], b[3], 3))
    l4, f2, f0 = g("f_branch.conv_lr4x"), g("f_branch.conv_f2x"), g("f_branch.conv_f.0")
    fusion = (conv(4, lr8, l4, 5) + conv(2, l4 + b[3], f2, 3) + conv(1, f2 + 3, f0, 3)
              + conv(1, f0, 1, 1))
    c0 = g("hr_branch.conv_hr.0")
    training_heads = conv(16, lr8, 1, 3) + conv(1, b[3] + 3, c0, 3) + conv(1, c0, 1, 1)
    inference = backbone + lr + hr + fusion
    return inference, inference + training_heads


def hand_changed_arch() -> mp.Arch:
    heads = dict(mp.Arch().heads)
    heads.update({"lr_branch.conv_lr16x": 40, "lr_branch.conv_lr8x": 24, "hr_branch.tohr_enc2x": 8,
                  "hr_branch.conv_enc2x": 20, "hr_branch.conv_hr4x.1": 48,
                  "hr_branch.conv_hr2x.0": 40, "hr_branch.conv_hr2x.3": 16,
                  "hr_branch.conv_hr.0": 12, "f_branch.conv_lr4x": 8, "f_branch.conv_f.0": 6})
    return mp.Arch(stem=24, stages=(8, 16, 24, 48, 80, 120, 200),
                   expansion=(48, 72, 64, 96, 80, 144, 200, 192, 176, 256, 300, 280, 320, 600, 480, 512),
                   last=640, se_hidden=72, heads=heads)


@pytest.fixture(scope="module")
def official_512():
    return model_costs(mp.MODNet(), 512)


def _share(report, prefix):
    return sum(layer["share"] for layer in report["layers"] if layer["name"].startswith(prefix))


def test_official_counts_match_published_numbers(official_512):
    r = official_512
    assert r["params"] == 6_487_075
    assert r["macs"] == 15_465_971_712
    assert r["macs_train"] == 18_117_066_752
    assert r["size"] == [512, 512]
    # published 512x512 shares (docs/origin.md), to the printed 0.1 %
    shares = {name: round(100 * part["share"], 1) for name, part in r["parts"].items()}
    assert shares == {"backbone": 10.1, "lr_branch": 22.4, "hr_branch": 48.4, "f_branch": 19.1}
    assert round(100 * _share(r, "lr_branch.conv_lr16x"), 1) == 20.3
    assert round(100 * _share(r, "hr_branch.conv_hr2x"), 1) == 31.2
    params_share = {k: round(v["params"] / r["params"], 2) for k, v in r["parts"].items()}
    assert params_share["backbone"] == 0.34
    lr16 = next(layer for layer in r["layers"] if layer["name"] == "lr_branch.conv_lr16x.layers.0")
    assert round(lr16["params"] / r["params"], 2) == 0.47
    assert lr16["layout"] == "1280->96 k5"


@pytest.mark.parametrize("size, macs, macs_train_m", [
    (288, 4_894_090_112, 5_733),
    ("1024", None, 72_466),
])
def test_official_counts_at_other_sizes(size, macs, macs_train_m):
    r = model_costs(mp.MODNet(), size)
    if macs is not None:
        assert r["macs"] == macs
    else:
        assert round(r["macs"] / 1e6) == 61_861
    assert round(r["macs_train"] / 1e6) == macs_train_m
    assert r["params"] == 6_487_075  # size-independent


@pytest.mark.parametrize("size", [(512, 512), (96, 160)])
def test_hand_changed_widths_match_independent_formula(size):
    arch = hand_changed_arch()
    r = model_costs(mp.MODNet(arch), size)
    assert (r["macs"], r["macs_train"]) == formula_macs(arch, *size)


def test_formula_agrees_with_published_official_numbers():
    # guards the formula itself, so the hand-changed test compares against something right
    assert formula_macs(mp.Arch(), 512, 512) == (15_465_971_712, 18_117_066_752)


def test_parts_and_layers_add_up(official_512):
    r = official_512
    model = mp.MODNet()
    assert list(r["parts"]) == ["backbone", "lr_branch", "hr_branch", "f_branch"]
    assert sum(p["macs"] for p in r["parts"].values()) == r["macs"]
    assert sum(p["macs_train"] for p in r["parts"].values()) == r["macs_train"]
    assert sum(p["params"] for p in r["parts"].values()) == r["params"]
    layers = r["layers"]
    macs = [layer["macs"] for layer in layers]
    assert macs == sorted(macs, reverse=True)
    assert sum(layer["macs"] for layer in layers) == r["macs"]
    assert sum(layer["share"] for layer in layers) == pytest.approx(1.0)
    assert layers[-1]["cum_share"] == pytest.approx(1.0)
    conv_linear = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == len(conv_linear)  # every layer listed once: the shared backbone too
    assert sum(layer["params"] for layer in layers) == sum(
        p.numel() for m in conv_linear for p in m.parameters())
    assert not any(layer["name"].startswith("lr_branch.backbone") for layer in layers)
    idle = {layer["name"] for layer in layers if layer["macs"] == 0}
    assert idle == TRAINING_ONLY
    assert all(layer["macs_train"] > 0 for layer in layers)


def test_weight_bytes_count_unique_tensors(official_512):
    model = mp.MODNet()
    unique = {k: v for k, v in model.state_dict().items() if not k.startswith("lr_branch.backbone.")}
    floats = sum(v.numel() for v in unique.values() if v.is_floating_point())
    ints = sum(v.numel() * v.element_size() for v in unique.values() if not v.is_floating_point())
    assert official_512["weight_bytes"] == {"fp32": 4 * floats + ints, "fp16": 2 * floats + ints}
    assert official_512["file_bytes"] is None and official_512["checkpoint"] is None


def _cli_json(capsys, *args):
    assert main(["analyze", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_json_schema(capsys):
    r = _cli_json(capsys, "--size", "288")
    assert {"params", "macs", "macs_train", "size", "parts", "layers"} <= set(r)
    assert isinstance(r["params"], int) and isinstance(r["macs"], int)
    assert isinstance(r["macs_train"], int) and r["size"] == [288, 288]
    assert r["macs"] == 4_894_090_112
    for part in r["parts"].values():
        assert isinstance(part["params"], int) and isinstance(part["macs"], int)
    for layer in r["layers"]:
        assert {"name", "type", "params", "macs", "share"} <= set(layer)
        assert layer["type"] in ("Conv2d", "Linear") and isinstance(layer["share"], float)
    names = [layer["name"] for layer in r["layers"]]
    assert names[0] == "lr_branch.conv_lr16x.layers.0"
    assert {"backbone.model.features.0.0", "lr_branch.se_block.fc.0"} <= set(names)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_cli_checkpoint_reports_file_size(capsys, tmp_path, dtype):
    arch = hand_changed_arch()
    path = mp.save(mp.MODNet(arch), tmp_path / "narrow.safetensors", dtype=dtype)
    r = _cli_json(capsys, "--checkpoint", str(path), "--size", "96x160")
    assert r["checkpoint"] == str(path) and r["file_bytes"] == os.path.getsize(path)
    assert (r["macs"], r["macs_train"]) == formula_macs(arch, 96, 160)
    # a safetensors file is its tensors plus a JSON header of a few tens of KB
    stored = r["weight_bytes"]["fp16" if dtype else "fp32"]
    assert 0 < r["file_bytes"] - stored < 64 * 1024


@pytest.mark.parametrize("size, suggestion", [
    ("500", "480x480, 512x512"),
    ("512x300", "512x288, 512x320"),
    ("16", "32x32"),
    ("abc", "expected N or HxW"),
])
def test_bad_size_refused_with_one_line(capsys, size, suggestion):
    assert main(["analyze", "--size", size]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and suggestion in captured.err


def test_missing_checkpoint_refused(capsys, tmp_path):
    assert main(["analyze", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_table_shows_totals_and_top_layers(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["analyze", "--size", "288", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "4,894,090,112" in out and "6,487,075" in out
    assert "lr_branch.conv_lr16x.layers.0" in out
    assert "69 more layers" in out  # 74 conv/linear layers, 5 shown
