"""One validator for numbers and sizes; the CLI, TrainConfig and recipes agree on defaults
and refuse the same bad values with one line each, before anything is written."""
import dataclasses
import math

import pytest
from helpers import tiny_model

import modnet_prune as mp
from modnet_prune.checks import KEEP_FRACTION, RATIO, Range
from modnet_prune.cli import build_parser, main
from modnet_prune.errors import UserError
from modnet_prune.model.inputs import check_size, parse_size
from modnet_prune.pipeline.recipe import FinetuneSpec, Recipe
from modnet_prune.train.loop import FINETUNE, TrainConfig
from modnet_prune.train.losses import DistillWeights


@pytest.mark.parametrize("value, inside", [
    (0.0, True), (0.999, True), (1.0, False), (-1e-9, False), (math.nan, False), (math.inf, False),
    ("0.5", False), (True, False),
])
def test_ratio_range_by_hand(value, inside):
    assert RATIO.contains(value) is inside


def test_range_messages_name_the_option():
    assert str(RATIO) == "in [0, 1)" and str(KEEP_FRACTION) == "in (0, 1]"
    assert str(Range(1, integer=True)) == "an integer >= 1"
    with pytest.raises(UserError, match=r"^--gamma nan: must be in \(0, 1\]$"):
        Range(0, 1, low_open=True).check(math.nan, "--gamma")


def test_sizes_have_one_rule_and_one_parser():
    assert check_size(64) == (64, 64) and parse_size("512x288") == (512, 288)
    assert check_size((100, 60), multiple=1) == (100, 60)  # a generic model's harness
    with pytest.raises(UserError, match="^--cost-size 33: must be a positive multiple of 32; "
                                        "nearest valid: 32, 64$"):
        check_size(33, "--cost-size")
    with pytest.raises(UserError, match="512x300: height and width .* 512x288, 512x320$"):
        parse_size("512x300")


def test_cli_defaults_are_the_dataclass_defaults():
    """train defaults to TrainConfig(); finetune and compress to FINETUNE, which recipes'
    fine-tuning also starts from; distillation to DistillWeights.recommended()."""
    parser = build_parser()
    train = parser.parse_args(["train", "--data", "d", "--out", "o", "--steps", "1"])
    finetune = parser.parse_args(["finetune", "--student", "s", "--teacher", "t", "--data", "d",
                                  "--out", "o", "--steps", "1"])
    fields = ("lr", "optimizer", "momentum", "weight_decay", "schedule", "gamma", "min_lr",
              "batch_size", "workers", "size", "warmup", "seed", "log_every", "checkpoint_every")
    assert {f: getattr(train, f) for f in fields} == {f: getattr(TrainConfig(), f) for f in fields}
    assert {f: getattr(finetune, f) for f in fields} == {f: getattr(FINETUNE, f) for f in fields}
    spec = FinetuneSpec()
    shared = [f.name for f in dataclasses.fields(FinetuneSpec) if hasattr(FINETUNE, f.name)]
    recipe_side = {f: getattr(spec, f) for f in shared}  # a frozen recipe holds tuples
    recipe_side = {f: list(v) if isinstance(v, tuple) else v for f, v in recipe_side.items()}
    assert recipe_side == {f: getattr(FINETUNE, f) for f in shared}
    assert {k: getattr(finetune, f"kd_{k}") for k in DistillWeights().as_dict()} == \
        DistillWeights.recommended().as_dict()
    assert not Recipe().distill.enabled  # a recipe distils only when it says so


@pytest.mark.parametrize("args, message", [
    (["train", "--momentum", "nan"], "--momentum nan: must be in [0, 1)"),
    (["train", "--gamma", "nan"], "--gamma nan: must be in (0, 1]"),
    (["train", "--lr", "inf"], "--lr inf: must be > 0"),
    (["train", "--matte-scale", "-1"], "--matte-scale -1.0: must be >= 0"),
    (["finetune", "--kd-matte", "-1"], "--kd-matte -1.0: must be >= 0"),
    (["finetune", "--recalibrate-bn", "-3"], "--recalibrate-bn -3: must be an integer >= 0"),
    (["compress", "--cost-size", "33"], "--cost-size 33: must be a positive multiple of 32"),
])
def test_bad_numbers_are_one_line_errors_and_write_nothing(tmp_path, capsys, args, message):
    model = tmp_path / "m.safetensors"
    mp.save(tiny_model(), model)
    command = {"train": ["--steps", "1"],
               "finetune": ["--student", str(model), "--teacher", str(model), "--steps", "1"],
               "compress": ["--checkpoint", str(model), "--target-macs", "0.5",
                            "--finetune-steps", "1"]}[args[0]]
    out = tmp_path / "run"
    code = main([args[0], *command, *args[1:], "--data", "synthetic:4@64", "--size", "64",
                 "--workers", "0", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
