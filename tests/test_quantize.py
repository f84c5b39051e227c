"""int8 quantization: QDQ graph, fidelity budget, kept-float nodes, refusals, CPU capability,
and every command that takes an ONNX file taking the int8 one."""
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from modnet_prune import save
from modnet_prune.cli import main
from modnet_prune.data import open_source
from modnet_prune.data.images import write_png
from modnet_prune.deploy import conv_split, quantize as q
from modnet_prune.deploy.matting import Matter
from modnet_prune.deploy.onnx_export import export_onnx
from modnet_prune.deploy.runtime import OnnxRuntime, TorchRuntime
from modnet_prune.errors import UserError
from modnet_prune.measure.benchmark import environment
from helpers import randomise_bn, tiny_model

SIZE = 64
DATA = "synthetic:8@64+seed3"
VNNI = q.Int8Capability(arch="x86_64", vnni=True, dot_product=False, reduce_range=False)


def conv_net(path, in_channels=3):
    """image -> Conv -> Relu -> Conv -> InstanceNorm -> Relu -> Conv -> Sigmoid -> matte."""
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.5):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("InstanceNormalization", ["c2", "s", "t"], ["n2"], name="inorm"),
             helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
             helper.make_node("Sigmoid", ["c3"], ["matte"], name="sigmoid")]
    inits = [init("w1", 8, in_channels, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 8, 3, 3),
             init("b2", 8, scale=0.1), init("s", 8, scale=1.0), init("t", 8, scale=0.1),
             init("w3", 1, 8, 1, 1), init("b3", 1, scale=0.1)]
    graph = helper.make_graph(
        nodes, "conv_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", in_channels, "h", "w"])],
        [helper.make_tensor_value_info("matte", TensorProto.FLOAT, ["n", 1, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny MODNet checkpoint, its int8 file and the report (one quantization for all)."""
    folder = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = randomise_bn(tiny_model())
    save(model, folder / "tiny.safetensors")
    report = q.quantize_model(folder / "tiny.safetensors", DATA, folder / "tiny.int8.onnx",
                              count=4, holdout=2, size=SIZE, budget=0.1, capability=VNNI)
    return model, folder, report


def producers(proto):
    return {o: n for n in proto.graph.node for o in n.output}


def initializers(proto):
    return {t.name: t for t in proto.graph.initializer}


def test_int8_graph_holds_int8_weights_and_qdq_nodes(tiny):
    _, folder, report = tiny
    proto = onnx.load(folder / "tiny.int8.onnx")
    made_by, inits = producers(proto), initializers(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) > 20  # every conv of the exported graph, whatever its folding
    for conv in convs:  # the weight comes from an int8 initializer through a DequantizeLinear
        dq = made_by[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert inits[dq.input[0]].data_type == TensorProto.INT8
        assert numpy_helper.to_array(inits[dq.input[1]]).size == inits[dq.input[0]].dims[0]
        assert made_by[conv.input[0]].op_type == "DequantizeLinear"  # and so does its input
    ops = report.nodes
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    # ops without an int8 CPU kernel stay float: their parameters are plain float tensors
    for node in proto.graph.node:
        if node.op_type in q.FLOAT_OPS:
            assert all(inits[i].data_type == TensorProto.FLOAT for i in node.input[1:])
    assert "InstanceNormalization" in report.float_ops and set(report.float_ops) <= set(q.FLOAT_OPS)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["precision"] == "int8" and json.loads(meta["int8_kept_float"]) == []
    assert float(meta["int8_delta_mean"]) == pytest.approx(report.delta_mean, rel=1e-5)
    assert float(meta["int8_fp32_noise_floor"]) == pytest.approx(report.noise_floor, rel=1e-5)
    assert report.noise_floor > 0
    assert meta["int8_calibration"].startswith(DATA) and meta["arch"]
    assert report.summed_taps == [] == json.loads(meta["int8_float_summed_taps"])  # no mixing


def test_an_lr16x_mixing_first_sums_its_taps_in_float(tmp_path):
    """lr16x reading 1024 channels mixes them before its upsample (UpsampledConv): its mix
    conv is int8; the Resize, the one-hot shift and the grouped sum after it stay float."""
    import dataclasses
    from modnet_prune import MODNet
    from modnet_prune.deploy.inference_graph import MIX_FIRST_MIN_CHANNELS
    from helpers import tiny_arch

    torch.manual_seed(1)
    arch = dataclasses.replace(tiny_arch(), last=MIX_FIRST_MIN_CHANNELS)
    save(randomise_bn(MODNet(arch)), tmp_path / "m.safetensors")
    report = q.quantize_model(tmp_path / "m.safetensors", DATA, tmp_path / "m.int8.onnx",
                              count=4, holdout=2, size=SIZE, budget=1, capability=VNNI)
    proto = onnx.load(tmp_path / "m.int8.onnx")
    made_by, inits, nodes = producers(proto), initializers(proto), {n.name: n for n in proto.graph.node}
    assert [nodes[name].op_type for name in report.summed_taps] == ["Resize", "Conv", "Conv"]
    resize, shift, total = (nodes[name] for name in report.summed_taps)
    mix = made_by[resize.input[0]]
    while mix.op_type in q.QDQ_OPS:  # back through the Q/DQ pair of the mix conv's output
        mix = made_by[mix.input[0]]
    assert mix.op_type == "Conv" and made_by[mix.input[1]].op_type == "DequantizeLinear"
    for conv in (shift, total):  # float weights, read straight from float inputs
        assert inits[conv.input[1]].data_type == TensorProto.FLOAT
        assert made_by[conv.input[0]].op_type not in q.QDQ_OPS
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["int8_float_summed_taps"]) == report.summed_taps


def test_int8_within_budget_on_held_out_images(tiny):
    model, folder, report = tiny
    int8, reference = OnnxRuntime(folder / "tiny.int8.onnx"), TorchRuntime(model, device="cpu")
    matter, images = Matter(reference, ref=SIZE), open_source(DATA)
    inputs = [matter.network_input(images.sample(i).image) for i in range(6)]  # 4 calibration, 2 held out
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in inputs))
    assert report.calibration_sha256 == digest.hexdigest()
    deltas = [np.abs(int8(x) - reference(x)).mean() for x in inputs[4:]]
    assert np.mean(deltas) == pytest.approx(report.delta_mean, abs=1e-4)  # torch vs fp32 ONNX
    assert report.delta_mean <= report.budget
    assert 0 < report.delta_mean  # it really is quantized


def run_float_in_ort(path, names):
    """The op type ORT runs each named node as, after its QDQ fusions."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    optimized = path.with_name("optimized.onnx")
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kinds = {n.name: n.op_type for n in onnx.load(optimized).graph.node}
    return {name: kinds.get(name) for name in names}


def test_tight_budget_keeps_the_fewest_sensitive_nodes_float(tmp_path):
    model = conv_net(tmp_path / "net.onnx")
    loose = q.quantize_model(model, DATA, tmp_path / "loose.onnx", count=4, holdout=2,
                             size=SIZE, budget=1.0, capability=VNNI)
    budget = 0.999 * loose.delta_mean
    report = q.quantize_model(model, DATA, tmp_path / "tight.onnx", count=4, holdout=2,
                              size=SIZE, budget=budget, capability=VNNI)
    assert report.kept_float and report.delta_mean <= budget < loose.delta_mean
    kept = len(report.kept_float)  # one fewer was tried and failed: the fewest
    assert any(r["kept_float"] == kept - 1 and r["delta_mean"] > budget for r in report.rounds)
    proto = onnx.load(tmp_path / "tight.onnx")
    inits = initializers(proto)
    for node in proto.graph.node:
        if node.name in report.kept_float:  # float parameters, not dequantized ones
            assert all(i in inits and inits[i].data_type == TensorProto.FLOAT
                       for i in node.input[1:]), node.name
    runs_as = run_float_in_ort(tmp_path / "tight.onnx", report.kept_float)
    assert all(kind is not None and not kind.startswith("QLinear") for kind in runs_as.values())
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["int8_kept_float"]) == report.kept_float
    untouched = run_float_in_ort(tmp_path / "loose.onnx", ["conv1", "conv2", "conv3"])
    assert any(kind == "QLinearConv" for kind in untouched.values())  # the check can fail


def test_sensitive_nodes_are_ranked_in_the_split_graph(tmp_path, monkeypatch):
    """The int8 graph has one conv per IBNorm part (conv_split): the search ranks its nodes
    against the graph it was quantized from (against the export's, ORT cannot even be asked
    for the part convs' outputs), and a tight budget keeps some float in the written file."""
    monkeypatch.setattr(conv_split, "MIN_PART_CHANNELS", 4)  # the tiny widths' halves
    torch.manual_seed(0)
    export_onnx(randomise_bn(tiny_model()), tmp_path / "m.onnx")
    exported = (tmp_path / "m.onnx").read_bytes()
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    int8 = q.quantize_graph(exported, [x])
    split = onnx.load_from_string(exported)
    assert conv_split.split_convs(split) > 0
    parts = lambda ranking: [name for name in ranking if "/part" in name]
    assert parts(q.rank_sensitive_nodes(split.SerializeToString(), int8, x))
    # this CPU's own setting: forced 8-bit weights saturate on x86 without VNNI, and then no
    # node kept float brings Δ down (on a Zen 3 it stayed at 0.070 with 8 nodes float)
    cpu = q.int8_capability()
    loose = q.quantize_model(tmp_path / "m.onnx", DATA, tmp_path / "l.onnx", count=4, holdout=2,
                             size=SIZE, budget=1.0, capability=cpu)
    report = q.quantize_model(tmp_path / "m.onnx", DATA, tmp_path / "t.onnx", count=4, holdout=2,
                              size=SIZE, budget=0.999 * loose.delta_mean, capability=cpu)
    written = {n.name for n in onnx.load(tmp_path / "t.onnx").graph.node}
    assert report.kept_float and set(report.kept_float) <= written
    assert any("/part" in name for name in written)


def test_unreachable_budget_is_refused_and_nothing_written(tmp_path):
    model = conv_net(tmp_path / "net.onnx")
    with pytest.raises(UserError, match=r"cannot meet --budget 1e-12: the best mean.*1 grey level "
                                        r"of input noise moves the fp32 matte by \d"):
        q.quantize_model(model, DATA, tmp_path / "out.onnx", count=4, holdout=2, size=SIZE,
                         budget=1e-12, capability=VNNI)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def half_channel_net(path):
    """matte = 0.5 * image[:, :1] + 0.5 (in [0, 1]): a model whose noise floor is known by hand."""
    nodes = [helper.make_node("Slice", ["image", "start", "end", "axis"], ["red"], name="red"),
             helper.make_node("Mul", ["red", "half"], ["scaled"], name="scale"),
             helper.make_node("Add", ["scaled", "half"], ["matte"], name="shift")]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("start", [0]), ("end", [1]), ("axis", [1]))]
    inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    graph = helper.make_graph(
        nodes, "half_channel",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("matte", TensorProto.FLOAT, ["n", 1, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return OnnxRuntime(path)


def test_noise_floor_is_the_models_response_to_one_grey_level(tmp_path):
    fp32 = half_channel_net(tmp_path / "half.onnx")
    rng = np.random.default_rng(1)  # away from -1 and 1: no clipping
    heldout = [rng.uniform(-0.9, 0.9, (1, 3, 64, 64)).astype(np.float32) for _ in range(2)]
    reference = [fp32(x) for x in heldout]
    # -1, 0, +1 levels equally likely: E|noise| = 2/3 of a level (2/255 in network units)
    expected = 0.5 * (2 / 255) * (2 / 3)
    assert q.noise_floor(fp32, reference, heldout) == pytest.approx(expected, rel=0.03)
    assert q.noise_floor(fp32, reference, heldout, seed=5) != q.noise_floor(fp32, reference, heldout)


def test_cpu_capability_from_flags():
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
    assert q.int8_capability(x86, "x86_64").reduce_range
    assert not q.int8_capability(x86 + "flags : avx512_vnni\n", "x86_64").reduce_range
    assert not q.int8_capability(x86.replace("avx512bw", "avx_vnni"), "x86_64").reduce_range
    arm = q.int8_capability("Features\t: fp asimd asimddp\n", "aarch64")
    assert arm.dot_product and not arm.reduce_range and not arm.vnni
    assert environment(1, (64, 64), 1, 0)["int8"] == q.int8_capability().as_dict()


def test_non_vnni_x86_gets_7_bit_weights(tmp_path):
    model = conv_net(tmp_path / "net.onnx")
    no_vnni = q.int8_capability("flags : avx2 avx512f\n", "x86_64")
    widest = {}
    for name, capability in (("vnni", VNNI), ("no-vnni", no_vnni)):
        out = tmp_path / f"{name}.onnx"
        q.quantize_model(model, DATA, out, count=4, holdout=2, size=SIZE, budget=1.0,
                         capability=capability)
        proto = onnx.load(out)
        weights = [numpy_helper.to_array(t) for t in proto.graph.initializer
                   if t.data_type == TensorProto.INT8]
        widest[name] = max(int(np.abs(w.astype(int)).max()) for w in weights)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert ("7-bit" in meta["int8_scheme"]) == (name == "no-vnni")
    assert widest == {"vnni": 127, "no-vnni": 64}


def fails_cleanly(capsys, argv, out):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("modnet-prune quantize: error:")
    assert not out.exists()
    return err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, tiny):
    model, out = str(conv_net(tmp_path / "net.onnx")), tmp_path / "out.onnx"
    base = ["quantize", "--checkpoint", model, "--out", str(out), "--size", str(SIZE), "--json"]
    (tmp_path / "empty").mkdir()
    assert "nor any image" in fails_cleanly(capsys, base + ["--calibration", str(tmp_path / "empty")], out)
    assert "has only 8" in fails_cleanly(capsys, base + ["--calibration", DATA, "--count", "7"], out)
    int8 = str(tiny[1] / "tiny.int8.onnx")
    argv = ["quantize", "--checkpoint", int8, "--out", str(out), "--calibration", DATA]
    assert "already quantized" in fails_cleanly(capsys, argv, out)
    gray = str(conv_net(tmp_path / "gray.onnx", in_channels=1))
    argv = ["quantize", "--checkpoint", gray, "--out", str(out), "--calibration", DATA]
    assert "not a MODNet matte graph" in fails_cleanly(capsys, argv, out)
    before = (tmp_path / "net.onnx").read_bytes()
    argv = ["quantize", "--checkpoint", model, "--out", model, "--calibration", DATA]
    assert main(argv) == 2 and "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "net.onnx").read_bytes() == before
    unreadable = tmp_path / "photos"
    unreadable.mkdir()
    for name in ("a.png", "b.jpg"):
        (unreadable / name).write_bytes(b"not an image")
    assert "not a readable image" in fails_cleanly(
        capsys, base + ["--calibration", str(unreadable), "--count", "1", "--holdout", "1"], out)


def test_cli_calibrates_on_a_plain_image_folder(tmp_path, capsys):
    photos = tmp_path / "photos" / "trip"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(3):
        write_png(photos / f"{k}.png", rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    model, out = conv_net(tmp_path / "net.onnx"), tmp_path / "net.int8.onnx"
    argv = ["quantize", "--checkpoint", str(model), "--calibration", str(tmp_path / "photos"),
            "--out", str(out), "--count", "2", "--holdout", "1", "--size", str(SIZE),
            "--budget", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calibration"] == str(tmp_path / "photos") and out.is_file()
    assert OnnxRuntime(out).static_hw is None  # still takes any size


@pytest.mark.slow  # the benchmark measures peak RSS in fresh processes
def test_evaluate_benchmark_and_matte_run_the_int8_file(tiny, tmp_path, capsys):
    _, folder, _ = tiny
    int8 = str(folder / "tiny.int8.onnx")
    assert main(["evaluate", "--checkpoint", int8, "--data", "synthetic:2@64+seed9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 2 and 0 <= result["mad"] <= 1
    assert main(["benchmark", "--checkpoint", int8, "--vs", str(folder / "tiny.safetensors"),
                 "--size", "64", "--repeat", "2", "--warmup", "0", "--threads", "1",
                 "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["a"]["runtime"] == "onnxruntime" and bench["ratio"] > 0
    assert bench["env"]["int8"]["description"]
    write_png(tmp_path / "me.png", np.full((40, 70, 3), 128, np.uint8))
    assert main(["matte", str(tmp_path / "me.png"), "--checkpoint", int8, "--out",
                 str(tmp_path / "out"), "--size", "64", "--no-progress"]) == 0
    assert (tmp_path / "out" / "me_alpha.png").is_file()
