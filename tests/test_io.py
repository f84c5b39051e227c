"""Loading every checkpoint form users have, saving ours, and refusing bad files."""
import json

import pytest
import torch
from safetensors import safe_open

import modnet_prune as mp
from modnet_prune.errors import CheckpointError
from modnet_prune.model.io import infer_arch

IMG = torch.randn(1, 3, 64, 64)


def _randomise(model):
    """Non-trivial BN statistics, so that losing them would change the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _matte(model):
    with torch.no_grad():
        return model.eval()(IMG)


@pytest.fixture(scope="module")
def model():
    return _randomise(mp.MODNet())


def test_official_release_layout_loads_identically(model, tmp_path):
    # The release files: torch.save of a DataParallel state dict, every key under module.
    state = {"module." + k: v for k, v in model.state_dict().items()}
    assert len(state) == 751
    torch.save(state, tmp_path / "official.ckpt")
    loaded = mp.load(tmp_path / "official.ckpt")
    assert loaded.arch == mp.Arch()
    torch.testing.assert_close(_matte(loaded), _matte(model), rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model"])
def test_plain_and_wrapped_state_dicts(model, tmp_path, wrap):
    state = model.state_dict()
    torch.save(state if wrap == "plain" else {wrap: state, "epoch": 3}, tmp_path / "m.pth")
    torch.testing.assert_close(_matte(mp.load(tmp_path / "m.pth")), _matte(model), rtol=0, atol=0)


def test_safetensors_roundtrip_with_metadata(model, tmp_path):
    path = mp.save(model, tmp_path / "m.safetensors", note="hello", plan={"a": 1})
    loaded, meta = mp.load(path, with_metadata=True)
    torch.testing.assert_close(_matte(loaded), _matte(model), rtol=0, atol=0)
    assert meta["format"] == "modnet-prune" and meta["note"] == "hello"
    assert json.loads(meta["plan"]) == {"a": 1}
    assert mp.Arch.from_json(meta["arch"]) == model.arch
    with safe_open(str(path), "pt") as f:  # the shared backbone is stored once
        assert not any(k.startswith("lr_branch.backbone.") for k in f.keys())


def test_fp16_storage_loads_as_float32(model, tmp_path):
    path = mp.save(model, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = mp.load(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    # Independent expectation: every float tensor rounded to half and back, nothing else.
    rounded = mp.MODNet(model.arch)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
    torch.testing.assert_close(_matte(loaded), _matte(rounded), rtol=0, atol=0)


def _pruned_by_hand(model):
    """The write-up's V2 edit done on a state dict: features.18 1280->640 and the SE and
    conv_lr16x with it, hr_branch.conv_hr2x.1 32->24 (BN part 16->12)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    keep = torch.arange(0, 1280, 2)
    for prefix in ("backbone.", "lr_branch.backbone."):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            key = f"{prefix}model.features.18.1.{suffix}"
            state[key] = state[key][keep]
        key = f"{prefix}model.features.18.0.weight"
        state[key] = state[key][keep]
    state["lr_branch.se_block.fc.0.weight"] = state["lr_branch.se_block.fc.0.weight"][:, keep]
    state["lr_branch.se_block.fc.2.weight"] = state["lr_branch.se_block.fc.2.weight"][keep]
    key = "lr_branch.conv_lr16x.layers.0.weight"
    state[key] = state[key][:, keep]
    conv = "hr_branch.conv_hr2x.1.layers."
    rows = list(range(12)) + list(range(16, 28))  # 12 BN channels and 12 IN channels kept
    state[conv + "0.weight"] = state[conv + "0.weight"][rows]
    state[conv + "0.bias"] = state[conv + "0.bias"][rows]
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        state[conv + "1.bnorm." + suffix] = state[conv + "1.bnorm." + suffix][:12]
    nxt = "hr_branch.conv_hr2x.2.layers.0.weight"
    state[nxt] = state[nxt][:, rows]
    return state


def test_hand_pruned_official_layout_loads_by_shape(model, tmp_path):
    state = _pruned_by_hand(model)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "v2.ckpt")
    loaded = mp.load(tmp_path / "v2.ckpt")
    assert loaded.arch.last == 640 and loaded.arch.se_hidden == 320
    assert loaded.arch.heads["hr_branch.conv_hr2x.1"] == 24
    assert loaded.arch.ibn_bn["hr_branch.conv_hr2x.1"] == 12
    assert infer_arch(state) == loaded.arch
    out = _matte(loaded)
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()
    # and it round-trips through our format with its inferred widths
    again = mp.load(mp.save(loaded, tmp_path / "v2.safetensors"))
    torch.testing.assert_close(_matte(again), out, rtol=0, atol=0)


def _save_state(tmp_path, state):
    torch.save(state, tmp_path / "bad.pth")
    return tmp_path / "bad.pth"


def test_missing_key_is_named(model, tmp_path):
    state = model.state_dict()
    del state["f_branch.conv_f2x.layers.0.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: f_branch\.conv_f2x\.layers\.0\.bias"):
        mp.load(_save_state(tmp_path, state))


def test_unexpected_key_is_named(model, tmp_path):
    state = dict(model.state_dict(), **{"extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        mp.load(_save_state(tmp_path, state))


def test_misshaped_key_is_named_with_expectation(model, tmp_path):
    state = model.state_dict()
    state["f_branch.conv_f2x.layers.0.bias"] = torch.zeros(31)
    with pytest.raises(CheckpointError, match=r"f_branch\.conv_f2x\.layers\.0\.bias \(31,\) \(expected \(32,\)\)"):
        mp.load(_save_state(tmp_path, state))


def test_non_finite_weights_are_refused(model, tmp_path):
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the fixture stays finite
    state["hr_branch.conv_hr2x.0.layers.0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        mp.load(_save_state(tmp_path, state))


def test_disagreeing_shared_backbone_copies_are_refused(model, tmp_path):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lr_branch.backbone.model.features.0.0.weight"] += 1
    with pytest.raises(CheckpointError, match="differ"):
        mp.load(_save_state(tmp_path, state))


@pytest.mark.parametrize("content", [b"", b"junk" * 100, b"\x80\x02junk"])
def test_junk_files_are_refused(tmp_path, content):
    (tmp_path / "junk.ckpt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        mp.load(tmp_path / "junk.ckpt")


def test_truncated_files_are_refused(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "full.pth")
    mp.save(model, tmp_path / "full.safetensors")
    for name in ("full.pth", "full.safetensors"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / ("cut-" + name)).write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            mp.load(tmp_path / ("cut-" + name))


def test_pickled_objects_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError):
        mp.load(tmp_path / "evil.pth")


def test_save_is_atomic_and_replaces_only_when_complete(model, tmp_path, monkeypatch):
    path = mp.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        with open(args[1], "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr("modnet_prune.model.io.save_file", crash)
    with pytest.raises(RuntimeError):
        mp.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp left behind
