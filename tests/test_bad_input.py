"""Issue 13: hostile and careless input. Nothing lost, one clear line, a non-zero exit.

Each test reproduces a case that once destroyed a file, wrote a wrong result with exit 0,
or ended in a traceback.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import modnet_prune as mp
from modnet_prune import memory
from modnet_prune.cli import main
from modnet_prune.data import open_dataset
from modnet_prune.errors import CheckpointError, UserError
from modnet_prune.files import check_outputs, read_yaml
from modnet_prune.train import TrainConfig, fit
from modnet_prune.train.rundir import LOCK, RunLock
from helpers import tiny_model

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    mp.save(tiny_model(), path)
    return path


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args) -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- 1-3: data loss

def test_the_guard_resolves_links_and_folders(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    (tmp_path / "link.csv").symlink_to(model)
    os.link(model, tmp_path / "hard.csv")
    data = tmp_path / "data"
    (data / "matte").mkdir(parents=True)
    for out in (model, tmp_path / "." / "m.safetensors", tmp_path / "link.csv",
                tmp_path / "hard.csv"):
        with pytest.raises(UserError, match="refusing to overwrite the input"):
            check_outputs([model], files=[out])
    with pytest.raises(UserError, match="inside the input folder"):
        check_outputs([data], files=[data / "matte" / "x.csv"])
    with pytest.raises(UserError, match="holds the input"):
        check_outputs([data / "matte"], folders=[data])
    with pytest.raises(UserError, match="is a folder"):
        check_outputs([model], files=[data])
    check_outputs([model, data, None], files=[tmp_path / "new.csv"], folders=[tmp_path / "o"])
    assert model.read_bytes() == b"weights"


def test_evaluate_never_writes_over_its_checkpoint_or_data(ckpt, tmp_path, capsys):
    before = ckpt.read_bytes()
    assert "overwrite the input" in one_line_error(
        capsys, "evaluate", "--checkpoint", ckpt, "--data", "synthetic:2@64", "--csv", ckpt)
    cli(capsys, "synth", "--out", tmp_path / "syn", "--count", 1, "--size", 64)
    matte = next((tmp_path / "syn" / "matte").iterdir())
    truth = matte.read_bytes()
    assert "inside the input folder" in one_line_error(
        capsys, "evaluate", "--checkpoint", ckpt, "--data", tmp_path / "syn", "--csv", matte)
    assert "holds the input" in one_line_error(
        capsys, "evaluate", "--checkpoint", ckpt, "--data", tmp_path / "syn",
        "--save-predictions", tmp_path)
    assert ckpt.read_bytes() == before and matte.read_bytes() == truth
    # predictions never replace a user's file of the same name
    from modnet_prune.data.synthetic import sample_name
    (tmp_path / "preds").mkdir()
    users = tmp_path / "preds" / f"{sample_name(0)}.png"
    Image.fromarray(rgb(8, 8)).save(users)
    kept = users.read_bytes()
    assert "was not written by modnet-prune" in one_line_error(
        capsys, "evaluate", "--checkpoint", ckpt, "--data", "synthetic:1@64", "--json",
        "--save-predictions", tmp_path / "preds")
    assert users.read_bytes() == kept


def test_prune_out_may_not_be_its_plan(ckpt, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("hr_branch.conv_hr2x.0.layers.0: {keep: 4}\n")
    assert "overwrite the input" in one_line_error(
        capsys, "prune", "--checkpoint", ckpt, "--plan", plan, "--out", plan, "--size", 64)
    assert plan.read_text() == "hr_branch.conv_hr2x.0.layers.0: {keep: 4}\n"


def test_an_existing_output_file_is_replaced_only_with_overwrite(ckpt, tmp_path, capsys):
    users = b"a file this run did not create"
    commands = {
        "prune": ["prune", "--checkpoint", ckpt, "--ratio", 0.5, "--size", 64],
        "export": ["export", "--checkpoint", ckpt, "--static", "64x64"],
        "quantize": ["quantize", "--checkpoint", ckpt, "--calibration", "synthetic:4@64",
                     "--count", 2, "--holdout", 2, "--size", 64],
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--data", "synthetic:2@64"],
    }
    for name, args in commands.items():
        out = tmp_path / f"{name}.{'csv' if name == 'evaluate' else 'onnx'}"
        if name == "prune":
            out = out.with_suffix(".safetensors")
        out.write_bytes(users)
        flag = "--csv" if name == "evaluate" else "--out"
        assert "pass --overwrite" in one_line_error(capsys, *args, flag, out), name
        assert out.read_bytes() == users, name
        if name != "quantize":  # the same flag, the same guard: one slow quantize is enough
            assert cli(capsys, *args, flag, out, "--overwrite")[0] == 0, name
            assert out.read_bytes() != users, name


def test_matte_into_its_input_folder_keeps_the_users_files(ckpt, tmp_path, capsys):
    Image.fromarray(rgb(40, 60)).save(tmp_path / "a.png")
    Image.fromarray(rgb(40, 60, 1)).save(tmp_path / "a_alpha.png")  # the user's own file
    users = (tmp_path / "a_alpha.png").read_bytes()
    code, _, err = cli(capsys, "matte", "--checkpoint", ckpt, tmp_path, "--out", tmp_path,
                       "--size", 64, "--no-progress")
    assert code == 1 and "a.png: skipped" in err and "a_alpha.png is an input of this run" in err
    assert (tmp_path / "a_alpha.png").read_bytes() == users  # not replaced
    assert (tmp_path / "a_alpha_alpha.png").is_file()  # and matted as the input it is
    # our own outputs are recognised: a second run replaces them and mattes nothing twice
    code, _, err = cli(capsys, "matte", "--checkpoint", ckpt, tmp_path, "--out", tmp_path,
                       "--size", 64, "--no-progress")
    assert code == 1 and not (tmp_path / "a_alpha_alpha_alpha.png").exists()


# --------------------------------------------------------------------------- 4, 14, 16: run folders

def _cfg(**kw) -> TrainConfig:
    base = dict(size=64, batch_size=2, steps=1, lr=0.01, workers=0, log_every=1,
                checkpoint_every=1, schedule="constant")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return open_dataset("synthetic:4@64", size=64, train=True)


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, data):
    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                            "started": "now"}))
        with pytest.raises(UserError, match=f"{out} is in use by process {sleeper.pid}"):
            fit(tiny_model(), data, _cfg(), out, progress=False)
        assert not (out / "config.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is gone (killed): its lock is stale and taken over
    fit(tiny_model(), data, _cfg(), out, progress=False)
    assert (out / "last.safetensors").is_file() and not (out / LOCK).exists()


def test_the_lock_is_exclusive_between_processes(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from modnet_prune.train.rundir import RunLock\n"
         "with RunLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            with RunLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_without_a_finished_step_is_no_run_to_protect(tmp_path, data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"lr": 99}))  # a start-up that failed
    (out / ".last.state.pt.x1y2.tmp").write_bytes(b"half")  # a SIGKILLed save
    fit(tiny_model(), data, _cfg(), out, progress=False)  # neither refused nor --resume
    assert json.loads((out / "config.json").read_text())["lr"] == 0.01
    assert not list(out.glob(".*.tmp"))
    fit(tiny_model(), data, _cfg(steps=2), out, resume=True, progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        fit(tiny_model(), data, _cfg(), out, progress=False)


def test_a_pipeline_folder_without_progress_is_started_afresh(tmp_path):
    from modnet_prune.pipeline.recipe import load_recipe
    from modnet_prune.pipeline.run import RECIPE_FILE, STAGE_DIR, Run, _start
    recipe = load_recipe(os.path.join(os.path.dirname(__file__), "..", "recipes", "demo.yaml"))
    run = Run(recipe, tmp_path / "run")
    (run.out / STAGE_DIR).mkdir(parents=True)
    (run.out / RECIPE_FILE).write_text(json.dumps({"recipe": {"name": "typo"}}))
    (run.out / ".summary.json.k3j.tmp").write_text("{")
    _start(run, resume=False, teacher_sha256="abc")  # a failed start-up: neither refused
    assert json.loads((run.out / RECIPE_FILE).read_text())["teacher_sha256"] == "abc"
    assert not list(run.out.glob(".*.tmp"))
    (run.out / STAGE_DIR / "prune.json").write_text("{}")  # a finished stage is progress
    with pytest.raises(UserError, match="already holds a pipeline run"):
        _start(run, resume=False, teacher_sha256="abc")


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    import av
    path = tmp_path_factory.mktemp("video") / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(2000):
            frame = av.VideoFrame.from_ndarray(rgb(64, 64, i % 7), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_video_stops_and_leaves_no_temp_files(ckpt, long_video, tmp_path, sig):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "modnet_prune", "matte", "--checkpoint",
                             str(ckpt), str(long_video), "--out", str(out),
                             "--size", "64", "--threads", "1", "--no-progress"],
                            env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob(".*.tmp")):  # encoding has begun
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- 5-9: wrong results

def test_nan_options_and_weights_are_refused(tmp_path, capsys, data):
    base = ["train", "--data", "synthetic:4@64", "--size", 64, "--batch-size", 2, "--steps", 1,
            "--workers", 0, "--no-progress", "--out", tmp_path / "o"]
    for option, value in (("--momentum", "nan"), ("--gamma", "nan"), ("--weight-decay", "-1"),
                          ("--matte-scale", "inf")):
        assert option in one_line_error(capsys, *base, option, value)
    assert not (tmp_path / "o" / "last.safetensors").exists()
    model = tiny_model()
    with torch.no_grad():
        model.f_branch.conv_f[1].layers[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(UserError, match="not saved.*non-finite"):
        mp.save(model, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_finetune_distillation_weights_and_bn_batches_are_checked(ckpt, tmp_path, capsys):
    base = ["finetune", "--student", ckpt, "--teacher", ckpt, "--data", "synthetic:4@64",
            "--size", 64, "--batch-size", 2, "--steps", 1, "--workers", 0, "--no-progress",
            "--out", tmp_path / "o"]
    assert "--kd-matte -1" in one_line_error(capsys, *base, "--kd-matte", "-1")
    assert "--recalibrate-bn -3" in one_line_error(capsys, *base, "--recalibrate-bn", "-3")


def test_negative_bn_variance_is_refused_and_nan_mattes_are_errors(tmp_path):
    state = {k: v.clone() for k, v in tiny_model().state_dict().items()}
    state["hr_branch.conv_hr2x.0.layers.1.bnorm.running_var"][0] = -1.0
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="negative BatchNorm variance"):
        mp.load(tmp_path / "bad.pth")

    class Broken(torch.nn.Module):  # finite weights, NaN output
        def forward(self, x):
            return torch.full_like(x[:, :1], float("nan"))

    from modnet_prune.deploy import Matter, TorchRuntime
    from modnet_prune.metrics import evaluate
    runtime = TorchRuntime(Broken(), device="cpu")
    with pytest.raises(UserError, match="NaN/Inf"):
        Matter(runtime, ref=64)(rgb(64, 64))
    with pytest.raises(UserError, match="NaN/Inf"):
        evaluate(runtime, "synthetic:1@64")


def _onnx(tmp_path, graph_nodes, in_shape, out_shape, name="g.onnx", opset=17):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(graph_nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, tmp_path / name)
    return tmp_path / name


def test_onnx_files_must_be_matting_graphs(tmp_path):
    from onnx import helper
    from modnet_prune.deploy.runtime import OnnxRuntime, check_matte
    identity = _onnx(tmp_path, [helper.make_node("Identity", ["x"], ["y"])],
                     ["n", 3, "h", "w"], ["n", 3, "h", "w"])
    with pytest.raises(UserError, match="N x 1 x H x W"):
        OnnxRuntime(identity)
    # values that are no alpha show at run time (and shapes a graph leaves symbolic)
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(UserError, match="not a matte"):
        check_matte(np.zeros((2, 3, 32, 32), np.float32), x, "m.onnx")
    total = _onnx(tmp_path, [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1, axes=[1])],
                  ["n", 3, "h", "w"], ["n", 1, "h", "w"], "sum.onnx", opset=11)
    with pytest.warns(UserWarning, match="not exported by modnet-prune"):
        rt = OnnxRuntime(total)
    with pytest.raises(UserError, match="outside \\[0, 1\\]"):
        rt(np.ones((1, 3, 32, 32), np.float32))


def test_int8_qdq_onnx_is_accepted(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from modnet_prune.deploy import export_onnx
    from modnet_prune.deploy.runtime import OnnxRuntime
    export_onnx(tiny_model(), tmp_path / "fp32.onnx", check=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": np.random.default_rng(i).uniform(-1, 1, (1, 3, 64, 64))
                                .astype(np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ)
    matte = OnnxRuntime(tmp_path / "int8.onnx")(np.zeros((1, 3, 64, 64), np.float32))
    assert matte.shape == (1, 1, 64, 64) and 0 <= matte.min() <= matte.max() <= 1


def test_a_truncated_video_is_refused_not_half_matted(ckpt, tmp_path, capsys):
    import av
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"g": "4"}
        for i in range(40):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb(64, 64, i), "rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the index (moov, at the front) stays intact
    code, _, err = cli(capsys, "matte", "--checkpoint", ckpt, path, "--out", tmp_path / "out",
                       "--size", 64, "--no-progress")
    assert code == 1 and "of the 40 frames the file declares" in err
    assert list((tmp_path / "out").iterdir()) == []


# --------------------------------------------------------------------------- 10-13: tracebacks

def test_huge_sizes_are_refused_with_the_memory_they_need(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**30)
    for args in (["analyze", "--size", 100000], ["benchmark", "--checkpoint", ckpt,
                                                 "--size", 100000],
                 ["prune", "--checkpoint", ckpt, "--ratio", 0.5, "--size", 100000,
                  "--out", tmp_path / "p.safetensors"],
                 ["export", "--checkpoint", ckpt, "--static", "100000x100000",
                  "--out", tmp_path / "m.onnx"],
                 ["evaluate", "--checkpoint", ckpt, "--data", "synthetic:2@100000"],
                 ["synth", "--out", tmp_path / "syn", "--count", 1, "--size", 100000]):
        assert "GiB of memory; 8.0 GiB is available" in one_line_error(capsys, *args)
    assert not (tmp_path / "syn").exists() and list(tmp_path.iterdir()) == []
    memory.require_forward(512, 512)  # normal sizes pass
    memory.require_synthetic(512)


def test_arch_metadata_is_checked_against_tensor_shapes_before_building(ckpt, tmp_path,
                                                                        monkeypatch):
    tensors = load_file(str(ckpt))
    arch = mp.Arch.from_json(mp.load(ckpt, with_metadata=True)[1]["arch"]).to_dict()
    arch["last"] = 3_000_000
    save_file(tensors, str(tmp_path / "crafted.safetensors"), metadata={"arch": json.dumps(arch)})
    built = []
    monkeypatch.setattr("modnet_prune.model.io.MODNet", lambda a: built.append(a))
    with pytest.raises(CheckpointError, match="last 3000000 \\(tensors say 32\\)"):
        mp.load(tmp_path / "crafted.safetensors")
    assert built == []


def test_decompression_bombs_are_named_and_skipped(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so 64x64 counts as a bomb
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb(64, 64)).save(src / "bomb.png")
    Image.fromarray(rgb(8, 8)).save(src / "small.png")
    code, _, err = cli(capsys, "matte", "--checkpoint", ckpt, src, "--out", tmp_path / "out",
                       "--size", 64, "--no-progress")
    assert code == 1 and "bomb.png: refused" in err and "Traceback" not in err
    assert (tmp_path / "out" / "small_alpha.png").is_file()
    assert "bomb.png: refused" in one_line_error(
        capsys, "matte", "--checkpoint", ckpt, src / "small.png", "--out", tmp_path / "o2",
        "--background", src / "bomb.png")


def test_an_unreadable_training_image_is_one_line_from_a_loader_worker(tmp_path, capsys):
    for folder in ("images", "alphas"):
        (tmp_path / "ds" / folder).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rgb(64, 64, i)).save(tmp_path / "ds" / "images" / f"{i}.png")
        Image.fromarray(rgb(64, 64, i)[..., 0]).save(tmp_path / "ds" / "alphas" / f"{i}.png")
    (tmp_path / "ds" / "images" / "3.png").write_bytes(b"junk")
    err = one_line_error(capsys, "train", "--data", tmp_path / "ds", "--size", 64,
                         "--batch-size", 4, "--steps", 1, "--workers", 1, "--no-progress",
                         "--out", tmp_path / "run")
    assert err.startswith("modnet-prune train: error: ") and "3.png: not a readable image" in err


def test_thread_counts_cost_sizes_and_binary_files(ckpt, tmp_path, capsys):
    Image.fromarray(rgb(8, 8)).save(tmp_path / "a.png")
    for threads in (0, -2):
        assert "--threads" in one_line_error(capsys, "matte", "--checkpoint", ckpt,
                                             tmp_path / "a.png", "--out", tmp_path / "o",
                                             "--threads", threads)
        assert "--threads" in one_line_error(capsys, "evaluate", "--checkpoint", ckpt, "--data",
                                             "synthetic:1@64", "--runtime", "torch",
                                             "--threads", threads)
    assert "--cost-size 33" in one_line_error(
        capsys, "compress", "--checkpoint", ckpt, "--target-macs", 0.5, "--finetune-steps", 1,
        "--cost-size", 33, "--data", "synthetic:4@64", "--size", 64, "--out", tmp_path / "c")
    binary = tmp_path / "plan.yaml"
    binary.write_bytes(b"\xff\xfe\x00junk")
    assert "not UTF-8" in one_line_error(capsys, "prune", "--checkpoint", ckpt, "--plan", binary,
                                         "--out", tmp_path / "p.safetensors", "--size", 64)
    assert "not UTF-8" in one_line_error(capsys, "pipeline", "--recipe", binary,
                                         "--out", tmp_path / "run")


# --------------------------------------------------------------------------- 15, 17, 18

class Hyper:
    """What a training framework pickles beside the weights."""

def test_an_unreachable_compress_target_is_refused_before_round_one(ckpt, tmp_path, capsys):
    err = one_line_error(capsys, "compress", "--checkpoint", ckpt, "--target-macs", "1%",
                         "--finetune-steps", 1, "--cost-size", 64, "--data", "synthetic:4@64",
                         "--size", 64, "--batch-size", 2, "--workers", 0, "--out", tmp_path / "c")
    assert "asks to keep 1.0% of the model's inference MACs" in err and "allow keeps" in err
    assert not (tmp_path / "c").exists()


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: a\nseed: 1\nseed: 2\n")
    with pytest.raises(UserError, match="duplicate key 'seed' \\(line 3\\)"):
        read_yaml(path, "recipe")
    path.write_text("finetune:\n  lr: 0.1\n  lr: 0.2\n")
    from modnet_prune.pipeline.recipe import load_recipe
    with pytest.raises(UserError, match="duplicate key 'lr'"):
        load_recipe(path)


def test_small_messages_say_what_is_wrong(ckpt, tmp_path, capsys):
    assert "nothing can be pruned" in one_line_error(
        capsys, "prune", "--checkpoint", ckpt, "--ratio", 0.5, "--min-channels", 100000,
        "--size", 64, "--out", tmp_path / "p.safetensors")
    (tmp_path / "dir").mkdir()
    err = one_line_error(capsys, "convert", "--checkpoint", ckpt, "--out", tmp_path / "dir")
    assert "is a folder; give the output a file name" in err and ".tmp" not in err
    assert "is a folder, not a checkpoint" in one_line_error(
        capsys, "convert", "--checkpoint", tmp_path / "dir", "--out", tmp_path / "x.safetensors")

    torch.save({"state_dict": tiny_model().state_dict(), "hparams": Hyper()},
               tmp_path / "lightning.ckpt")
    err = one_line_error(capsys, "convert", "--checkpoint", tmp_path / "lightning.ckpt",
                         "--out", tmp_path / "x.safetensors")
    assert "holds Python objects besides tensors" in err and "state dict" in err


def test_debug_shows_the_underlying_cause(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError) as caught:
        main(["--debug", "convert", "--checkpoint", str(tmp_path / "junk.ckpt"),
              "--out", str(tmp_path / "x.safetensors")])
    assert caught.value.__cause__ is not None
