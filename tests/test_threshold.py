"""MODNet-P's L1-threshold width rule (`{threshold: t}` plans) and `{follow: LAYER}`,
against widths computed by hand on a tiny residual CNN."""
import pytest
import torch

import modnet_prune as mp
from modnet_prune.errors import UserError
from modnet_prune.prune import prune
from modnet_prune.prune.threshold import round_width, threshold_count
from helpers import ResidualCNN


def _filters_with_norms(conv: torch.nn.Conv2d, norms: list[float]) -> None:
    """Every weight of filter i equal, so that its L1 norm is norms[i]."""
    per_filter = conv.weight[0].numel()
    with torch.no_grad():
        for i, norm in enumerate(norms):
            conv.weight[i].fill_(norm / per_filter)


def _model() -> ResidualCNN:
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    # blocks.0.0 (24 filters): norms 1..24 -> normalised (n-1)/23 >= 0.5 for n = 13..24,
    # 12 filters; the first one below is counted too: 13.
    _filters_with_norms(model.blocks[0][0], [float(n) for n in range(1, 25)])
    # the residual group (stem and both blocks' last convs, 16 channels each):
    # stem: 14 x 1 and 2 x 5 -> 2 at or above, 3 counted; blocks.0.3: 10 x 1 and 6 x 3 -> 7.
    _filters_with_norms(model.stem[0], [1.0] * 14 + [5.0] * 2)
    _filters_with_norms(model.blocks[0][3], [1.0] * 10 + [3.0] * 6)
    return model


def test_the_count_and_its_rounding_by_hand():
    model = _model()
    assert threshold_count(model.blocks[0][0].weight, 0.5) == 13
    assert threshold_count(model.stem[0].weight, 0.5) == 3
    assert threshold_count(model.blocks[0][3].weight, 0.5) == 7
    assert threshold_count(torch.ones(5, 2, 3, 3), 0.5) == 5  # nothing tells them apart
    # nearest multiple (halves up), at least one multiple, never 10 % below the count
    assert [round_width(c, 8) for c in (3, 7, 11, 12, 13, 20)] == [8, 8, 16, 16, 16, 24]
    assert [round_width(c, 4) for c in (3, 7, 13)] == [4, 8, 12]


def test_threshold_plan_on_a_tiny_residual_cnn():
    model = _model()
    plan = {"blocks.0.0": {"threshold": 0.5}, "stem.0": {"threshold": 0.5},
            "blocks.0.3": {"threshold": 0.5}, "blocks.1.0": {"follow": "stem.0"}}
    result = prune(model, plan=plan, round_to=4, size=32, verify=True)
    widths = {name: after for name, (_, after) in result.widths.items()}
    # 13 -> 12 (multiple of 4); the residual group takes the larger of 4 (stem: 3 -> 4) and
    # 8 (blocks.0.3: 7 -> 8); blocks.1.0 keeps the group's fraction, 8/16 of its 24: 12.
    assert widths == {"blocks.0.0": 12, "stem.0": 8, "blocks.1.0": 12}
    assert result.max_abs_diff < 1e-4
    # with the default multiple of 8, 13 rounds to 16 (8 would lose over 10 %)
    assert prune(model, plan={"blocks.0.0": {"threshold": 0.5}}, size=32).widths["blocks.0.0"] == (24, 16)


@pytest.mark.parametrize("plan, message", [
    ({"blocks.0.0": {"threshold": 0}}, r"threshold 0: must be in \(0, 1\]"),
    ({"blocks.0.0": {"follow": 3}}, "must name a Conv2d or Linear"),
    ({"blocks.0.0": {"follow": "blocks.1.0"}, "blocks.1.0": {"follow": "stem.0"}}, "follow a layer"),
    ({"stem.0": {"follow": "blocks.0.0"}, "blocks.0.3": {"keep": 8}}, "follow a layer"),
])
def test_bad_threshold_and_follow_entries_are_one_line_errors(plan, message):
    with pytest.raises(UserError, match=message):
        prune(_model(), plan=plan, size=32)


def test_modnet_se_hidden_follows_its_input_group():
    torch.manual_seed(0)
    model = mp.MODNet().eval()
    plan = {"backbone.model.features.18.0": {"keep": 640},
            "lr_branch.se_block.fc.0": {"follow": "backbone.model.features.18.0"}}
    result = prune(model, plan=plan, size=64)
    assert result.model.arch.last == 640 and result.model.arch.se_hidden == 160  # 320 * 640 / 1280
