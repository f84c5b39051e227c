"""The latency model's bookkeeping, the latency-targeted allocation and its refusals, on a
3-group toy network with a hand-made cost table (no timing: timings are never asserted)."""
import dataclasses
import itertools
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.deploy.onnx_export import GRAPH_REVISION
from modnet_prune.errors import UserError
from modnet_prune.prune import CRITERIA, model_graph, prune
from modnet_prune.prune import allocate, api
from modnet_prune.prune.latency import (FEATURES, LatencyCost, LatencyModel, Target, features,
                                        layer_shapes)
from modnet_prune.measure import latency as profiling
from helpers import tiny_model

SIZE = (16, 16)
# ms per unit of each term; the names are the model's (kind.term)
TABLE = {"dense.macs": 1e-6, "dense.out": 1e-4, "dense.in": 2e-4, "pointwise.macs": 3e-6,
         "pointwise.out": 0.0, "pointwise.in": 5e-4, "depthwise.macs": 1e-5,
         "depthwise.out": 1e-3, "depthwise.in": 0.0, "linear.macs": 1e-2, "linear.out": 0.0,
         "linear.in": 0.1, "constant": 2.0}


class Toy(nn.Module):
    """Three prunable groups: c1 (16), c2 with its depthwise conv (16), c3 (24)."""

    def __init__(self, a=16, b=16, c=24):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, a, 3, padding=1), nn.BatchNorm2d(a)
        self.c2 = nn.Conv2d(a, b, 1)
        self.dw = nn.Conv2d(b, b, 3, padding=1, groups=b)
        self.c3 = nn.Conv2d(b, c, 3, stride=2, padding=1)
        self.fc = nn.Linear(c, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = self.dw(torch.relu(self.c2(x)))
        return self.fc(self.c3(x).mean((2, 3)))


def hand_ms(a: int, b: int, c: int) -> float:
    """TABLE priced by hand for kept widths (a, b, c) at 16x16 (c3 has stride 2: 8x8 out)."""
    t, hw, out3 = TABLE, 16 * 16, 8 * 8
    c1 = t["dense.macs"] * a * hw * 3 * 9 + t["dense.out"] * a * hw + t["dense.in"] * 3 * hw
    c2 = t["pointwise.macs"] * b * hw * a + t["pointwise.in"] * a * hw
    dw = t["depthwise.macs"] * b * hw * 9 + t["depthwise.out"] * b * hw
    c3 = t["dense.macs"] * c * out3 * b * 9 + t["dense.out"] * c * out3 + t["dense.in"] * b * hw
    fc = t["linear.macs"] * 4 * c + t["linear.in"] * c
    return t["constant"] + c1 + c2 + dw + c3 + fc


def table_model(size=SIZE, threads=1) -> LatencyModel:
    return LatencyModel(Target("onnxruntime", "1.0", "fp32", threads, size, "test cpu"),
                        dict(TABLE))


def toy_cost(model=None) -> tuple[LatencyCost, object]:
    model = model or Toy().eval()
    graph = model_graph(model)
    shapes = layer_shapes(model, torch.zeros(1, 3, *SIZE))
    return LatencyCost(graph, shapes, table_model()), graph


def test_cost_table_covers_every_feature():
    assert set(TABLE) == set(FEATURES)


@pytest.mark.parametrize("removed", [{}, {"c1": 8}, {"c2": 12, "c3": 8}, {"c1": 4, "c2": 8, "c3": 16}])
def test_bookkeeping_matches_hand_count_and_the_pruned_model(removed):
    cost, graph = toy_cost()
    a, b, c = (16 - removed.get("c1", 0), 16 - removed.get("c2", 0), 24 - removed.get("c3", 0))
    assert cost.total(removed) == pytest.approx(hand_ms(a, b, c), rel=1e-12)
    # and the same number from a physically smaller model, measured by its forward pass
    smaller = Toy(a, b, c).eval()
    assert table_model().predict_model(smaller, torch.zeros(1, 3, *SIZE)) == \
        pytest.approx(hand_ms(a, b, c), rel=1e-12)


def test_saving_is_the_difference_of_totals():
    cost, _ = toy_cost()
    removed = {"c1": 8, "c3": 8}
    for group in ("c1", "c2", "c3"):
        after = {**removed, group: removed.get(group, 0) + 4}
        assert cost.saving(removed, group, 4) == pytest.approx(
            cost.total(removed) - cost.total(after), rel=1e-9)


def slow_greedy(scores: dict, fraction: float, widths: allocate.Widths) -> dict:
    """The allocation rule done the slow way: at every step price every group's next step
    from scratch (hand_ms) and take the one with the least importance per ms saved."""
    full = {"c1": 16, "c2": 16, "c3": 24}
    keep = dict(full)
    order = {n: torch.argsort(s, stable=True) for n, s in scores.items()}
    group = {g.name: g for g in model_graph(Toy().eval()).prunable}
    ms = lambda k: hand_ms(k["c1"], k["c2"], k["c3"])  # noqa: E731
    goal = fraction * ms(full)
    while ms(keep) > goal:
        steps = []
        for name in sorted(keep):
            lower = [k for k in widths.options(group[name]) if k < keep[name]]
            if not lower:
                continue
            after = {**keep, name: lower[-1]}
            lost = float(scores[name][order[name][full[name] - keep[name]:full[name] - lower[-1]]].sum())
            steps.append((lost / (ms(keep) - ms(after)), name, lower[-1]))
        _, name, k = min(steps)
        keep[name] = k
    return keep


@pytest.mark.parametrize("fraction", [0.9, 0.7, 0.5, 0.36])
@pytest.mark.parametrize("seed", [0, 1])
def test_allocation_matches_the_slow_reference(fraction, seed):
    cost, graph = toy_cost()
    g = torch.Generator().manual_seed(seed)
    scores = {"c1": torch.rand(16, generator=g), "c2": torch.rand(16, generator=g),
              "c3": torch.rand(24, generator=g)}
    widths = allocate.Widths(round_to=4)
    keep = allocate.by_cost(graph, scores, cost, fraction, widths, "the predicted latency")
    assert keep == slow_greedy(scores, fraction, widths)
    assert hand_ms(keep["c1"], keep["c2"], keep["c3"]) <= fraction * hand_ms(16, 16, 24)


def test_smallest_reachable_is_the_brute_force_minimum():
    cost, graph = toy_cost()
    widths = allocate.Widths(round_to=4, min_channels=8)
    brute = min(hand_ms(a, b, c) for a, b, c in itertools.product(
        range(8, 17, 4), range(8, 17, 4), range(8, 25, 4)))
    assert allocate.smallest(graph, cost, widths) == pytest.approx(brute, rel=1e-12)


def test_unreachable_target_refused_before_any_work(monkeypatch):
    def no_scoring(*args, **kwargs):
        raise AssertionError("channels were scored for an unreachable target")

    monkeypatch.setattr(api, "importance", no_scoring)
    brute = min(hand_ms(a, b, c) for a, b, c in itertools.product(
        range(4, 17, 4), range(4, 17, 4), range(4, 25, 4)))
    with pytest.raises(UserError, match=f"smallest reachable is {brute / hand_ms(16, 16, 24):.3f}"):
        prune(Toy().eval(), target_latency=0.05, latency=table_model(), round_to=4, size=SIZE)


def test_target_latency_needs_a_model_and_a_fraction():
    with pytest.raises(UserError, match="latency model"):
        prune(Toy().eval(), target_latency=0.5, size=SIZE)
    with pytest.raises(UserError, match="target latency 1.5"):
        prune(Toy().eval(), target_latency=1.5, latency=table_model(), size=SIZE)
    with pytest.raises(UserError, match="exactly one"):
        prune(Toy().eval(), target_latency=0.5, target_macs=0.5, latency=table_model(), size=SIZE)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_target_latency_on_modnet_with_every_criterion(criterion):
    model = tiny_model()
    latency = table_model(size=(64, 64))
    result = prune(model, target_latency=0.8, latency=latency, criterion=criterion,
                   round_to=4, min_channels=4, size=64)
    predicted = result.latency["predicted_ms"]
    assert predicted["after"] <= 0.8 * predicted["before"]
    x = torch.zeros(1, 3, 64, 64)
    assert latency.predict_model(model, x) == pytest.approx(predicted["before"], rel=1e-9)
    assert latency.predict_model(result.model, x) == pytest.approx(predicted["after"], rel=1e-9)
    for before, after in result.widths.values():
        assert after == before or (after % 4 == 0 and after >= 4)
    assert result.to_dict()["allocation"] == {"mode": "target_latency", "target_latency": 0.8}


def test_fit_reproduces_exact_timings():
    rng = np.random.default_rng(0)
    xs = []
    for _ in range(24):
        a, b, c = (int(k) for k in rng.integers(1, 5, 3) * (4, 4, 6))
        shapes = layer_shapes(Toy(a, b, c).eval(), torch.zeros(1, 3, *SIZE))
        xs.append(features(shapes))
    ms = [table_model().predict(x) for x in xs]
    fitted = LatencyModel.fit(table_model().target, xs, ms)
    assert all(v >= 0 for v in fitted.coefficients.values())
    assert [fitted.predict(x) for x in xs] == pytest.approx(ms, rel=1e-6)
    assert LatencyModel.from_dict(json.loads(json.dumps(fitted.to_dict()))) == fitted


# --------------------------------------------------------------------------- the CLI
@pytest.fixture
def cached_target(tmp_path, monkeypatch):
    """A hand-made model cached for this machine's 1-thread 64x64 target; no profiling."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_measuring(*args, **kwargs):
        raise AssertionError("the target was profiled although a model is cached")

    monkeypatch.setattr(profiling, "time_random_prunes", no_measuring)
    target = profiling.target_for(threads=1, size=64)
    path = profiling.cache_path(target)
    path.parent.mkdir(parents=True)
    model = LatencyModel(target, dict(TABLE), error={"mean_abs": 0.0})
    path.write_text(json.dumps(model.to_dict()))
    assert str(path).startswith(str(tmp_path / "cache" / "modnet-prune"))
    return model


def test_cli_refuses_unreachable_latency_before_any_work(tmp_path, cached_target, capsys):
    ckpt, out = tmp_path / "t.safetensors", tmp_path / "s.safetensors"
    mp.save(tiny_model(), ckpt)
    code = main(["prune", "--checkpoint", str(ckpt), "--out", str(out), "--target-latency",
                 "0.01", "--threads", "1", "--size", "64"])
    assert code == 2
    assert "smallest reachable is" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("fraction", ["1.5", "0", "-0.2"])
def test_cli_refuses_a_latency_fraction_out_of_range_before_profiling(tmp_path, monkeypatch,
                                                                    capsys, fraction):
    """No latency model is cached: a bad fraction must be refused before one is measured."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    def no_measuring(*args, **kwargs):
        raise AssertionError("profiled before the fraction was checked")

    monkeypatch.setattr(profiling, "time_random_prunes", no_measuring)
    ckpt, out = tmp_path / "t.safetensors", tmp_path / "s.safetensors"
    mp.save(tiny_model(), ckpt)
    code = main(["prune", "--checkpoint", str(ckpt), "--out", str(out), "--target-latency",
                 fraction, "--threads", "1", "--size", "64"])
    assert code == 2
    assert f"target latency {float(fraction)!r}: must be in (0, 1]" in capsys.readouterr().err
    assert not out.exists()


def test_cli_prune_to_latency_reports_prediction_and_measurement(tmp_path, cached_target, capsys):
    ckpt, out = tmp_path / "t.safetensors", tmp_path / "s.safetensors"
    mp.save(tiny_model(), ckpt)
    code = main(["prune", "--checkpoint", str(ckpt), "--out", str(out), "--target-latency",
                 "0.8", "--threads", "1", "--size", "64", "--round-to", "4", "--repeat", "2",
                 "--corrections", "0", "--json"])
    assert code == 0
    latency = json.loads(capsys.readouterr().out)["latency"]
    assert latency["predicted_ms"]["after"] <= 0.8 * latency["predicted_ms"]["before"]
    assert latency["requested"] == 0.8 and len(latency["tries"]) == 1
    assert latency["measured_ms"]["before"] > 0 and latency["measured_fraction"] > 0
    assert mp.load(out).arch != tiny_model().arch


def test_cli_profile_shows_the_cached_model(cached_target, capsys):
    assert main(["profile", "--threads", "1", "--size", "64", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["measured_now"] is False and shown["coefficients"] == TABLE


def test_damaged_cache_is_measured_again(cached_target, monkeypatch):
    path = profiling.cache_path(cached_target.target)
    path.write_text("{not json")
    rows = [{"plan": {}, "ms": 10.0, "held_out": False}, {"plan": {}, "ms": 10.0, "held_out": True}]
    monkeypatch.setattr(profiling, "time_random_prunes", lambda *a, **k: rows)
    model, measured_now = profiling.latency_model(cached_target.target, progress=False)
    assert measured_now and model.error["held_out"] == 1
    assert json.loads(path.read_text())["measurements"] == rows


@pytest.mark.parametrize("load, threads, busy", [
    ({"other_cpus": 1.6, "cpus": 2}, 2, True),     # a training job beside it
    ({"other_cpus": 0.1, "cpus": 2}, 2, False),    # housekeeping only
    ({"other_cpus": 1.1, "cpus": 2}, 1, False),    # on the CPU its one thread left free
    ({"other_cpus": 1.4, "cpus": 2}, 1, True),
    ({"other_cpus": 9.0, "cpus": 16}, 2, False),   # on CPUs it does not use
    ({}, 2, False)])                                # measured before the load was kept
def test_a_model_measured_beside_other_work_is_flagged(load, threads, busy):
    target = dataclasses.replace(profiling.target_for(threads=1, size=64), threads=threads)
    reason = profiling.busy_while_measured(LatencyModel(target, dict(TABLE), load=load))
    assert (reason is not None) == busy
    if busy:
        assert f"kept {load['other_cpus']:.1f} of {load['cpus']} CPUs busy" in reason


def test_other_cpu_use_counts_another_process_and_not_this_one():
    import subprocess
    import sys

    from modnet_prune.measure.benchmark import OtherCpuUse

    spin = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass"
    with OtherCpuUse() as others:
        subprocess.run([sys.executable, "-c", spin], check=True)
    assert 0.6 < others.cpus < (os.cpu_count() or 1) + 0.5   # about one CPU: the child's


def test_the_load_while_measuring_is_kept_and_a_busy_one_warned_of(cached_target, monkeypatch,
                                                                   capsys):
    rows = [{"plan": {}, "ms": 10.0, "held_out": False}, {"plan": {}, "ms": 10.0, "held_out": True}]
    monkeypatch.setattr(profiling, "time_random_prunes", lambda *a, **k: rows)

    class Busy:  # what OtherCpuUse finds beside a training job
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.cpus = 1.7

    monkeypatch.setattr(profiling, "OtherCpuUse", Busy)
    monkeypatch.setattr(profiling.os, "cpu_count", lambda: 2)
    model, measured_now = profiling.latency_model(cached_target.target, rebuild=True,
                                                  progress=False)
    assert measured_now and model.load == {"other_cpus": 1.7, "cpus": 2}
    assert "kept 1.7 of 2 CPUs busy" in capsys.readouterr().err
    cached, measured_now = profiling.latency_model(cached_target.target, progress=False)
    assert not measured_now and cached.load == model.load   # kept in the cache file
    assert "profile --rebuild" in capsys.readouterr().err    # and warned of on every use
    quiet = dataclasses.replace(cached, load={"other_cpus": 0.05, "cpus": 2})
    profiling.cache_path(quiet.target).write_text(json.dumps(quiet.to_dict()))
    profiling.latency_model(quiet.target, progress=False)
    assert "busy" not in capsys.readouterr().err


def test_a_model_of_another_graph_revision_is_measured_again(cached_target, monkeypatch):
    target = cached_target.target
    assert target.revision == GRAPH_REVISION > 0
    old = dataclasses.replace(target, revision=target.revision - 1)
    profiling.cache_path(old).write_text(json.dumps(LatencyModel(old, dict(TABLE)).to_dict()))
    profiling.cache_path(target).unlink()
    rows = [{"plan": {}, "ms": 10.0, "held_out": False}, {"plan": {}, "ms": 10.0, "held_out": True}]
    monkeypatch.setattr(profiling, "time_random_prunes", lambda *a, **k: rows)
    model, measured_now = profiling.latency_model(target, progress=False)
    assert measured_now and model.target == target


def test_pipeline_prune_stage_targets_the_measured_latency_and_keeps_its_goal(
        tmp_path, cached_target, monkeypatch):
    """Where the latency model predicts 1.25x too little, the pipeline's prune re-aims its goal
    by measurement (0.7 / 1.25 of the predicted latency) and a resumed run reuses that goal."""
    from modnet_prune.pipeline.recipe import recipe_from_dict
    from modnet_prune.pipeline import run as pipeline_run
    from modnet_prune.pipeline.run import Run, latency_goal, stage_prune
    from helpers import make_teacher, tiny_recipe

    x = torch.zeros(1, 3, 64, 64)

    def measured(teacher, students, target, repeat=15, progress=True):
        ms = [cached_target.predict_model(m, x) for m in (teacher, *students)]
        fractions = [min(1.25 * m / ms[0], 1.0) for m in ms[1:]]
        return {"teacher_ms": ms[0], "students_ms": [f * ms[0] for f in fractions],
                "fractions": fractions}

    monkeypatch.setattr(profiling, "measured_latency", measured)
    data = tiny_recipe(make_teacher(tmp_path), recalibrate_bn=0)  # benchmark: 1 thread, 64x64
    data["prune"] = {"method": "target_latency", "target_latency": 0.7, "round_to": 4}
    out = tmp_path / "run"
    out.mkdir()
    run = Run(recipe_from_dict(data), out, progress=False)
    record = stage_prune(run)
    first = record["latency_goal"]["tries"][0]
    assert first["goal"] == 0.7 and first["measured_fraction"] == pytest.approx(
        1.25 * first["predicted_fraction"])
    goal = record["latency_goal"]["goal"]
    assert goal == pytest.approx(0.7 * first["predicted_fraction"] / first["measured_fraction"])
    predicted = record["prune"]["latency"]["predicted_ms"]
    assert predicted["after"] <= goal * predicted["before"] < 0.7 * predicted["before"]
    pruned = mp.load(out / record["pruned"])
    assert cached_target.predict_model(pruned, x) == pytest.approx(predicted["after"], rel=1e-9)

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again on resume")

    monkeypatch.setattr(profiling, "measured_latency", no_measuring)
    assert latency_goal(Run(recipe_from_dict(data), out, progress=False)) == record["latency_goal"]

    class Aimed(Exception):
        pass

    def compress(teacher, train_set, cc, *args, **kwargs):  # the iterative prune's target
        raise Aimed(cc.target_latency)

    monkeypatch.setattr(pipeline_run, "compress", compress)
    data["prune"]["iterations"] = 2
    with pytest.raises(Aimed) as aimed:
        pipeline_run._compress(Run(recipe_from_dict(data), out, progress=False))
    assert aimed.value.args == (goal,)


# --------------------------------------------------------------------------- measuring
def test_int8_target_times_the_quantized_graph(tmp_path):
    """An int8 target times what `quantize` makes: a QDQ graph of the same network (its matte
    near the fp32 file's), with the float-only ops left float."""
    import onnx
    from modnet_prune.deploy.runtime import OnnxRuntime

    model = tiny_model()
    paths = {}
    for precision in ("fp32", "int8"):
        target = profiling.target_for(precision=precision, threads=1, size=64)
        paths[precision] = tmp_path / f"{precision}.onnx"
        profiling.export_for(target, model, paths[precision])
    ops = {n.op_type for n in onnx.load(paths["int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not {"QuantizeLinear", "DequantizeLinear"} & {
        n.op_type for n in onnx.load(paths["fp32"]).graph.node}
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    fp32, int8 = (OnnxRuntime(paths[p], threads=1)(x) for p in ("fp32", "int8"))
    assert 0 < np.abs(fp32 - int8).mean() < 0.05


def test_openvino_target_times_the_file_in_openvino(tmp_path):
    """An OpenVINO target runs the exported file (fp32 and int8) in OpenVINO, computing the
    matte ONNX Runtime computes from the same file; its model is cached apart from ORT's."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from modnet_prune.deploy.runtime import OnnxRuntime

    model = tiny_model()
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    for precision, tolerance in (("fp32", 1e-4), ("int8", 0.02)):
        target = profiling.target_for("openvino", precision, threads=1, size=64)
        assert target.version != "unknown"
        assert profiling.cache_path(target) != profiling.cache_path(
            profiling.target_for("onnxruntime", precision, threads=1, size=64))
        path = tmp_path / f"{precision}.onnx"
        profiling.export_for(target, model, path)
        session = profiling._session(path, target)
        assert session.describe()["runtime"] == "openvino" and session.threads == 1
        assert np.abs(session(x) - OnnxRuntime(path, threads=1)(x)).mean() < tolerance
    measured = profiling.measured_latency(model, [model], target, repeat=1, progress=False)
    assert measured["teacher_ms"] > 0 and measured["fractions"][0] > 0


def test_openvino_target_without_the_package_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(profiling, "package_version",
                        lambda name: None if name == "openvino" else "1.0")
    with pytest.raises(UserError, match="pip install 'modnet-prune\\[openvino\\]'"):
        profiling.target_for("openvino")
    ckpt, out = tmp_path / "t.safetensors", tmp_path / "s.safetensors"
    mp.save(tiny_model(), ckpt)
    code = main(["prune", "--checkpoint", str(ckpt), "--out", str(out), "--target-latency",
                 "0.8", "--runtime", "openvino", "--threads", "1", "--size", "64"])
    assert code == 2 and "openvino package" in capsys.readouterr().err
    assert not out.exists()


def test_profile_prices_each_model_by_its_fastest_round(monkeypatch, tmp_path):
    """time_against_reference: a model's ms = its fastest round / the reference's fastest
    round in the same chunk x the reference's fastest round overall (scripted timings)."""
    rounds = {0: [[10.0, 30.0, 12.0], [5.0, 9.0, 4.0]],        # chunk 0: reference, model 1
              1: [[8.0, 20.0, 9.0], [6.0, 2.0, 7.0]]}           # chunk 1: reference, model 2
    calls = iter([rounds[0], rounds[1]])
    monkeypatch.setattr(profiling, "CHUNK", 1)
    monkeypatch.setattr(profiling, "export_for", lambda target, model, path: path.touch())
    monkeypatch.setattr(profiling, "_session", lambda path, target: None)
    monkeypatch.setattr(profiling, "interleaved_times", lambda *a, **k: next(calls))
    target = profiling.target_for(threads=1, size=64)
    ms = profiling.time_against_reference([nn.Identity()] * 3, target, tmp_path, repeat=3,
                                          progress=False)
    assert ms == pytest.approx([8.0, 8.0 * 4 / 10, 8.0 * 2 / 8])


class ScriptedMeasurement:
    """measured_latency stand-in: each try measures `slowdowns[k]` x its predicted latency."""

    def __init__(self, latency_model, slowdowns):
        self.model, self.slowdowns, self.goals = latency_model, list(slowdowns), []

    def prune(self, m, target_latency, **kw):
        self.goals.append(target_latency)
        return prune(m, target_latency=target_latency, **kw)

    def measure(self, teacher, students, target, repeat, progress):
        x = torch.zeros(1, 3, 64, 64)
        before = self.model.predict_model(teacher, x)
        after = self.model.predict_model(students[0], x) * self.slowdowns[len(self.goals) - 1]
        return {"teacher_ms": before, "students_ms": [after], "fractions": [after / before]}


def run_scripted(monkeypatch, cached_target, slowdowns, **kw):
    script = ScriptedMeasurement(cached_target, slowdowns)
    monkeypatch.setattr(profiling, "prune", script.prune)
    monkeypatch.setattr(profiling, "measured_latency", script.measure)
    result = profiling.prune_to_measured_latency(tiny_model(), 0.8, cached_target, round_to=4,
                                                 progress=False, **kw)
    return result, script.goals


def test_a_steady_bias_is_corrected_by_the_measured_ratio(monkeypatch, cached_target):
    """Every prune measures 1.25x its prediction: the second goal is the target scaled by
    predicted/measured of the first, and it is the try returned, measured closer to 0.8."""
    result, goals = run_scripted(monkeypatch, cached_target, [1.25, 1.25])
    first, second = result.latency["tries"]
    assert goals == [0.8, pytest.approx(0.8 * first["predicted_fraction"]
                                        / first["measured_fraction"])]
    assert first["measured_fraction"] == pytest.approx(1.25 * first["predicted_fraction"])
    assert abs(second["measured_fraction"] - 0.8) < abs(first["measured_fraction"] - 0.8)
    assert result.latency["measured_fraction"] == second["measured_fraction"]
    assert result.latency["requested"] == 0.8


def test_a_correction_measured_worse_is_not_kept(monkeypatch, cached_target):
    result, goals = run_scripted(monkeypatch, cached_target, [1.15, 0.6])
    first, second = result.latency["tries"]
    assert len(goals) == 2
    assert abs(first["measured_fraction"] - 0.8) < abs(second["measured_fraction"] - 0.8)
    assert result.latency["measured_fraction"] == first["measured_fraction"]


def test_no_correction_when_told_or_when_measured_as_predicted(monkeypatch, cached_target):
    # corrections 0; measured as predicted (a new goal would change nothing)
    for slowdowns, kw in (([1.25], {"corrections": 0}), ([1.0, 1.0], {})):
        script_goals = run_scripted(monkeypatch, cached_target, slowdowns, **kw)[1]
        assert script_goals == [0.8]


def test_an_unreachable_correction_is_recorded_and_the_first_try_kept(monkeypatch,
                                                                      cached_target):
    """Measured 4x faster than predicted: the corrected goal (> 1) is skipped, not pruned."""
    result, goals = run_scripted(monkeypatch, cached_target, [0.25])
    first, skipped = result.latency["tries"]
    assert goals == [0.8] and skipped["goal"] > 1 and "skipped" in skipped
    assert result.latency["measured_fraction"] == first["measured_fraction"]


def test_bad_correction_counts_refused_before_any_work(tmp_path, capsys):
    code = main(["prune", "--checkpoint", str(tmp_path / "missing.safetensors"), "--out",
                 str(tmp_path / "s.safetensors"), "--target-latency", "0.5",
                 "--corrections", "-1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "corrections -1" in err and len(err.strip().splitlines()) == 1
