"""Layer-wise reconstruction: exact where the cut channels were redundant, equal to a
full-data ridge solve, leaves untouched layers alone, and helps a pruned MODNet."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modnet_prune as mp
from modnet_prune.errors import UserError
from modnet_prune.prune import prune, reconstruct
from helpers import tiny_arch


def _redundant(first: nn.Module, width: int) -> None:
    """Make the last output of `first` half of its output 0 (weights and bias), and give
    the others larger weights, so the l1 criterion cuts exactly the redundant one; through a
    ReLU the cut channel is then 0.5 x channel 0, which the next layer can absorb."""
    with torch.no_grad():
        first.weight[1:width - 1] *= 4
        first.weight[width - 1] = 0.5 * first.weight[0]
        first.bias[width - 1] = 0.5 * first.bias[0]


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_a_redundant_channel_is_recovered_exactly(kind):
    torch.manual_seed(0)
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(6, 4, 3, padding=1, stride=2)).eval()
        inputs, data = None, [torch.randn(2, 3, 16, 16) for _ in range(2)]
    else:
        model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
        inputs = lambda size, batch, g: (torch.randn(batch, 5, generator=g),)  # noqa: E731
        data = [torch.randn(64, 5) for _ in range(2)]
    _redundant(model[0], 6)
    result = prune(model, plan={"0": {"keep": 5}}, round_to=1, size=(16, 16), inputs=inputs)
    cut = result.model
    assert cut[2].weight.shape[1] == 5 and not torch.allclose(cut(data[0]), model(data[0]))
    w = model[2].weight.detach()
    expected = w[:, :5].clone()
    expected[:, 0] += 0.5 * w[:, 5]           # the cut channel's reader, folded by hand
    report = reconstruct(model, result, data, damping=1e-10, inputs=inputs)
    assert [f.layer for f in report.fitted] == ["2"] and report.skipped == {}
    assert report.fitted[0].error_after < 1e-6 < report.fitted[0].error_before
    torch.testing.assert_close(cut[2].weight.detach(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(cut[2].bias.detach(), model[2].bias.detach(), atol=1e-4, rtol=0)
    held_out = torch.randn(3, 3, 16, 16) if kind == "conv" else torch.randn(7, 5)
    torch.testing.assert_close(cut(held_out), model(held_out), atol=1e-4, rtol=0)
    assert result.to_dict()["reconstruction"]["fitted"][0]["layer"] == "2"


def test_the_refit_is_the_ridge_solution_on_every_position():
    """Strided, dilated, padded conv; samples cover every output position, so the solve
    must equal the ridge regression on all im2col rows, built here with F.unfold."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 5, 3, stride=2, padding=2, dilation=2)).eval()
    data = [torch.randn(2, 3, 12, 12)]
    result = prune(model, plan={"0": {"keep": 4}}, round_to=1, size=(12, 12))
    cut, damping = result.model, 0.3
    with torch.no_grad():
        x = cut[1](cut[0](data[0]))
        y = model(data[0])
        a = F.unfold(x, 3, dilation=2, padding=2, stride=2).transpose(1, 2).flatten(0, 1)
        a = torch.cat([a, torch.ones(len(a), 1)], 1).double()
        b = y.flatten(2).transpose(1, 2).flatten(0, 1).double()
        w0 = torch.cat([cut[2].weight.flatten(1), cut[2].bias[:, None]], 1).T.double()
        gram = a.T @ a
        ridge = damping * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        w = torch.linalg.solve(gram + ridge, a.T @ b + ridge @ w0)
    reconstruct(model, result, data, damping=damping, samples=10**6)
    torch.testing.assert_close(cut[2].weight.detach(), w[:-1].T.reshape(5, 4, 3, 3).float(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cut[2].bias.detach(), w[-1].float(), atol=1e-5, rtol=1e-5)


def test_grouped_layers_are_skipped_and_unaffected_layers_untouched():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.ReLU(), nn.Conv2d(8, 6, 1), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
    result = prune(model, plan={"0": {"keep": 4}}, round_to=1, size=(8, 8))
    cut = result.model
    last = cut[6].weight.detach().clone()
    report = reconstruct(model, result, [torch.randn(2, 3, 8, 8)])
    assert list(report.skipped) == ["2"] and "grouped" in report.skipped["2"]
    assert [f.layer for f in report.fitted] == ["4"]
    assert torch.equal(cut[6].weight, last)          # its inputs were all kept


def test_a_pruned_modnet_moves_towards_the_original_on_held_out_images():
    torch.manual_seed(3)
    teacher = mp.MODNet(tiny_arch()).eval()
    result = prune(teacher, ratio=0.5, round_to=1, size=(64, 64))
    g = torch.Generator().manual_seed(0)
    calibration = [torch.randn(2, 3, 64, 64, generator=g) for _ in range(4)]
    held_out = torch.randn(4, 3, 64, 64, generator=g)
    with torch.no_grad():
        target = teacher(held_out)
        before = (result.model(held_out) - target).pow(2).mean()
        report = reconstruct(teacher, result, calibration)
        after = (result.model(held_out) - target).pow(2).mean()
    assert report.fitted and all(f.error_after <= f.error_before for f in report.fitted)
    assert after < 0.7 * before


@pytest.mark.parametrize("kwargs, message", [
    ({"data": []}, "gave no batches"),
    ({"data": [torch.randn(1, 3, 8, 8)], "batches": 0}, "batches 0"),
    ({"data": ["not an image"]}, "data items must be batches"),
])
def test_bad_arguments_are_user_errors(kwargs, message):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    result = prune(model, plan={"0": {"keep": 2}}, round_to=1, size=(8, 8))
    with pytest.raises(UserError, match=message):
        reconstruct(model, result, **kwargs)
