"""Recipe loading: the shipped recipes are valid and agree with each other; every bad key or
value is refused with one line that names it."""
from pathlib import Path

import pytest
import yaml

from modnet_prune.pipeline.recipe import RecipeError, load_recipe, recipe_from_dict
from modnet_prune.pipeline.run import latency_target, train_config

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
BENCHMARK_RECIPES = ("seed-v2", "modnet-p", "ours-50", "ours-25")


def _write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_shipped_recipes_load_and_share_one_budget():
    recipes = {n: load_recipe(RECIPES / f"{n}.yaml") for n in (*BENCHMARK_RECIPES, "demo")}
    budgets = {recipes[n].finetune.samples for n in BENCHMARK_RECIPES}
    assert len(budgets) == 1 and budgets.pop() > recipes["demo"].finetune.samples > 0
    assert recipes["ours-50"].prune.target_macs == 0.5
    assert recipes["ours-25"].prune.method == "target_latency"
    assert recipes["ours-25"].prune.target_latency <= 1 / 3 and recipes["ours-25"].prune.iterations > 1
    assert recipes["seed-v2"].prune.method == "plan" and not recipes["seed-v2"].distill.enabled
    assert recipes["ours-50"].distill.enabled and recipes["ours-50"].recalibrate_bn > 0
    assert {recipes[n].data.eval for n in BENCHMARK_RECIPES} == {recipes["seed-v2"].data.eval}
    for n in BENCHMARK_RECIPES:  # one operating point: trained up to, int8-calibrated at 512²
        r = recipes[n]
        assert r.sizes.benchmark == max(r.finetune.multi_size) == r.sizes.train == 512, n
        assert r.quantize is None or r.quantize.size == r.sizes.benchmark, n
    demo = recipes["demo"]       # the demo's one point is 128²: fine-tuning at 512² takes hours
    assert demo.sizes.train == demo.sizes.eval == demo.sizes.benchmark
    assert demo.quantize.size in (None, demo.sizes.benchmark)  # None: sizes.eval


def test_seed_v2_widths_reproduce_the_write_up_costs():
    """The plan's widths, built directly as an Arch, give V2's reported params and training
    MACs to within 1% (1.76 M; 8,977 M at 512x512)."""
    from modnet_prune import Arch, MODNet
    from modnet_prune.measure import model_costs

    plan = load_recipe(RECIPES / "seed-v2.yaml").prune.plan
    keep = {k: v["keep"] for k, v in plan.items()}
    f = "backbone.model.features."
    stage_keys = ("1.conv.3", "2.conv.6", "4.conv.6", "7.conv.6", "11.conv.6", "14.conv.6", "17.conv.6")
    heads = {k.removesuffix(".layers.0"): v for k, v in keep.items() if ".layers.0" in k}
    heads["lr_branch.conv_lr8x"] = 32  # hr_channels does not set it (enc_channels[2] does)
    arch = Arch(stem=keep[f + "0.0"], stages=tuple(keep[f + s] for s in stage_keys),
                expansion=tuple(keep[f"{f}{i}.conv.0"] for i in range(2, 18)),
                last=keep[f + "18.0"], se_hidden=keep["lr_branch.se_block.fc.0"], heads=heads)
    result = model_costs(MODNet(arch), 512)
    assert abs(result["params"] / 1.76e6 - 1) < 0.01
    assert abs(result["macs_train"] / 8977e6 - 1) < 0.01


def test_modnet_p_plan_decides_every_group_as_modnet_p_does():
    """Every prunable group but conv_lr8x is decided; HR and fusion convs keep half; the SE
    hidden layer a quarter of the kept enc32x; the rest by the threshold rule."""
    import torch

    from modnet_prune import MODNet
    from modnet_prune.prune import model_graph
    from modnet_prune.prune.allocate import Widths, from_plan

    torch.manual_seed(0)
    model = MODNet().eval()
    graph = model_graph(model)
    keep = from_plan(graph, model, load_recipe(RECIPES / "modnet-p.yaml").prune.plan, Widths(8, 1))
    whole = {g.name for g in graph.prunable} - set(keep)
    assert whole == {"lr_branch.conv_lr8x.layers.0"}
    for g in graph.prunable:
        if g.name.startswith(("hr_branch.", "f_branch.")):
            assert keep[g.name] == g.width // 2
    assert keep["lr_branch.se_block.fc.0"] == keep["backbone.model.features.18.0"] // 4
    assert all(keep[g.name] % 8 == 0 for g in graph.prunable if g.name.startswith("backbone."))


@pytest.mark.parametrize("data, key", [
    ({"prune": {"method": "ratio", "ratio": 0.5, "critrion": "l1"}}, "prune.critrion: unknown key"),
    ({"finetun": {}}, "finetun: unknown key"),
    ({"prune": {"method": "ratio", "ratio": 0.5, "criterion": "l3"}}, "prune.criterion: 'l3' is not one of"),
    ({"prune": {"method": "ratio", "ratio": 1.5}}, "prune.ratio 1.5: must be in [0, 1)"),
    ({"prune": {"method": "ratio"}}, "prune.ratio: method ratio needs this key"),
    ({"prune": {"method": "ratio", "ratio": 0.5, "target_macs": 0.5}},
     "prune.target_macs: does not go with method ratio"),
    ({"prune": {"method": "plan", "plan": {"hr_branch.conv_enc2x.layers.0": {"keep": 0}}}},
     "prune.plan.hr_branch.conv_enc2x.layers.0: keep 0"),
    ({"prune": {"method": "plan", "plan": {"x": {"drop": 3}}}}, "prune.plan.x: expected {keep: N}"),
    ({"prune": {"method": "plan", "plan": {"x": {"threshold": 1.5}}}}, "prune.plan.x: threshold 1.5"),
    ({"prune": {"method": "plan", "plan": {"x": {"follow": 2}}}}, "prune.plan.x: follow 2"),
    ({"prune": {"method": "ratio", "ratio": 0.5, "iterations": 3}}, "prune.iterations: iterative"),
    ({"prune": {"method": "target_latency", "target_latency": 1.2}},
     "prune.target_latency 1.2: must be in (0, 1]"),
    ({"prune": {"method": "target_latency", "target_macs": 0.5}},
     "prune.target_latency: method target_latency needs this key"),
    ({"prune": {"method": "target_latency", "target_latency": 0.5, "latency_precision": "int4"}},
     "prune.latency_precision: 'int4' is not one of fp32, int8"),
    ({"prune": {"method": "target_macs", "target_macs": 0.5, "latency_precision": "int8"}},
     "prune.latency_precision: is read by method target_latency only"),
    ({"prune": {"method": "target_latency", "target_latency": 0.5, "latency_precision": "int8"}},
     "prune.latency_precision: int8 needs a quantize section"),
    ({"prune": {"method": "target_latency", "target_latency": 0.5, "latency_corrections": -1}},
     "prune.latency_corrections -1"),
    ({"finetune": {"samples": "many"}}, "finetune.samples: expected int, got str 'many'"),
    ({"finetune": {"samples": 100, "lr": -1}}, "finetune.lr -1.0: must be > 0"),
    ({"finetune": {"samples": 8, "batch_size": 16}}, "finetune.samples: 8 is less than one batch"),
    ({"finetune": {"scales": {"semantik": 1.0}}}, "finetune.scales.semantik: unknown term"),
    ({"finetune": {"samples": 64, "batch_size": 16, "supervised": 0}},
     "finetune.supervised: is 0 and every distill weight is 0"),
    ({"distill": {"matte": True}}, "distill.matte: expected float, got bool True"),
    ({"distill": {"kd": 1.0}}, "distill.kd: unknown key"),
    ({"sizes": {"train": 100}}, "sizes.train 100: must be a positive multiple of 32"),
    ({"finetune": {"multi_size": [128, 100]}}, "finetune.multi_size[1] 100: must be a positive"),
    ({"finetune": {"multi_size": [256]}}, "finetune.multi_size[0]: 256 is larger than sizes.train"),
    ({"finetune": {"multi_size": 128}}, "finetune.multi_size: expected list, got int 128"),
    ({"finetune": {"multi_size": ["128"]}}, "finetune.multi_size[0]: expected int, got str"),
    ({"data": {"train": "synthetic:100@128+seed0", "eval": "synthetic:10@128+seed95"}},
     "data.eval: seeds 95..104 overlap the training seeds 0..99"),
    ({"data": {"train": "synthetic:100@128", "eval": "synthetic:10@128"}}, "data.eval: seeds 0..9 overlap"),
    ({"data": {"eval": "synthetic:ten"}}, "data.eval: 'synthetic:ten': expected synthetic:N@S"),
    ({"benchmark": {"runtimes": ["torch", "tensorrt"]}}, "benchmark.runtimes[1]: 'tensorrt' is not one of"),
    ({"benchmark": {"repeat": 0}}, "benchmark.repeat: must be >= 1"),
    ({"name": "my recipe"}, "name: 'my recipe': use letters"),
    ({"prune": "half"}, "prune: expected a mapping"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, data, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(_write(tmp_path, data))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'r.yaml'}: ")
    assert key in message


def test_unreadable_recipes_are_one_line_errors(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match=r"not valid YAML \(line 2\)"):
        load_recipe(_write(tmp_path, "name: x\nprune: method: ratio\n"))
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(_write(tmp_path, "- a\n- b\n"))


def test_defaults_types_and_budget_override(tmp_path):
    recipe = load_recipe(_write(tmp_path, {"finetune": {"samples": 100, "lr": 1, "batch_size": 16},
                                           "prune": {"method": "target_macs", "target_macs": 0.5,
                                                     "iterations": 3}},
                                name="small.yaml"))
    assert recipe.name == "small"                        # the file name by default
    assert recipe.finetune.lr == 1.0 and isinstance(recipe.finetune.lr, float)
    assert recipe.steps == 7                             # ceil(100 / 16)
    assert recipe.with_budget(16 * 3).steps == 3         # one step per prune iteration at least
    assert recipe.with_budget(0).steps == 0
    assert recipe.with_budget(20).steps == 3             # ... even when that exceeds the budget
    with pytest.raises(RecipeError, match=r"finetune.samples: 8 is less than one batch \(16\)"):
        recipe.with_budget(8)
    assert recipe.with_finetune(precision="bf16").finetune.precision == "bf16"
    assert recipe.with_finetune(precision="bf16").finetune.lr == recipe.finetune.lr
    with pytest.raises(RecipeError, match="finetune.precision: 'fp16' is not one of fp32, bf16"):
        recipe.with_finetune(precision="fp16")
    assert recipe_from_dict(recipe.to_dict()) == recipe  # the resolved form round-trips
    assert recipe_from_dict({"sizes": {"eval": None}}).sizes.eval is None  # inference protocol


def test_multi_size_fine_tuning_reaches_the_training_config():
    recipe = recipe_from_dict({"sizes": {"train": 512}, "finetune": {"multi_size": [512, 128, 256]}})
    assert recipe.finetune.multi_size == (512, 128, 256)
    config = train_config(recipe, steps=10, recalibrate=0)
    assert (config.size, config.multi_size) == (512, [512, 128, 256])
    assert config.train_sizes == [128, 256, 512]         # what the student's file records
    assert recipe_from_dict(recipe.to_dict()) == recipe
    assert train_config(recipe_from_dict({}), steps=10, recalibrate=0).train_sizes == [128]


def test_quantize_is_off_unless_the_recipe_has_the_section():
    assert recipe_from_dict({}).quantize is None
    on = recipe_from_dict({"quantize": {}}).quantize
    assert on.count == 32 and on.method == "minmax" and on.calibration is None
    custom = recipe_from_dict({"quantize": {"calibration": "photos/", "budget": 0.01, "size": 256}})
    assert (custom.quantize.calibration, custom.quantize.budget, custom.quantize.size) == (
        "photos/", 0.01, 256)
    assert recipe_from_dict(custom.to_dict()) == custom
    for bad, message in (({"method": "kl"}, r"quantize.method: 'kl' is not one of"),
                         ({"budget": 0}, "quantize.budget: must be a positive"),
                         ({"size": 100}, "quantize.size: 100"),
                         ({"counts": 3}, "quantize.counts: unknown key")):
        with pytest.raises(RecipeError, match=message):
            recipe_from_dict({"quantize": bad})
    for name in ("demo", "ours-50", "ours-25"):
        assert load_recipe(Path(__file__).parents[1] / "recipes" / f"{name}.yaml").quantize


def test_latency_targets_the_precision_the_student_is_deployed_at():
    by_macs = recipe_from_dict({"prune": {"method": "target_macs", "target_macs": 0.5}})
    assert latency_target(by_macs) is None
    prune = {"method": "target_latency", "target_latency": 0.5}
    fp32 = latency_target(recipe_from_dict({"prune": prune, "benchmark": {"threads": 1},
                                            "sizes": {"benchmark": 256}}))
    assert (fp32.runtime, fp32.precision, fp32.threads, fp32.size) == (
        "onnxruntime", "fp32", 1, (256, 256))
    int8 = latency_target(recipe_from_dict({"prune": {**prune, "latency_precision": "int8"},
                                            "quantize": {}, "benchmark": {"threads": 1}}))
    assert int8.precision == "int8" and int8.threads == 1 and int8.graph == "fused"
