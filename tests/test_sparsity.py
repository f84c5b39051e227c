"""Group lasso (prune/sparsity.py): the penalty and its proximal step by hand, and training."""
import torch
from torch import nn

import modnet_prune as mp
from modnet_prune.data import open_dataset
from modnet_prune.model.layers import Conv2dIBNormReLU
from modnet_prune.prune.sparsity import GroupLasso
from modnet_prune.train import fit
from modnet_prune.train.rundir import RunDir

from helpers import cfg, divided_arch


class ConcatIBNorm(nn.Module):
    """Two prunable groups; the first is read through a concat at offset 0 of `b`'s input."""

    def __init__(self):
        super().__init__()
        self.a = Conv2dIBNormReLU(3, 6, 3, bn_channels=2)
        self.b = Conv2dIBNormReLU(6 + 3, 4, 3, bn_channels=3)
        self.out = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.out(self.b(torch.cat([self.a(x), x], 1)))


def test_penalty_is_the_mean_channel_norm_of_each_group_by_hand():
    torch.manual_seed(0)
    model = ConcatIBNorm()
    wa, wb, wo = (model.a.layers[0].weight, model.b.layers[0].weight, model.out.weight)
    # group a: a's filters and b's input columns 0..5; group b: b's filters and out's columns
    norms_a = (wa.pow(2).sum((1, 2, 3)) + wb[:, :6].pow(2).sum((0, 2, 3))).sqrt()
    norms_b = (wb.pow(2).sum((1, 2, 3)) + wo.pow(2).sum((0, 2, 3))).sqrt()
    expected = (norms_a.mean() + norms_b.mean()) / 2
    lasso = GroupLasso(model)
    assert len(lasso.groups) == 2
    value = lasso(model)
    torch.testing.assert_close(value, expected)
    # the gradient is the hand-computed one too: d/dw of mean_c ||w_c|| = w_c / (n ||w_c||)
    value.backward()
    expected_grad = wo.detach() / (2 * 4 * norms_b.detach()[None, :, None, None])
    torch.testing.assert_close(wo.grad, expected_grad)


class OneGroup(nn.Module):
    """One prunable group (a's outputs), whose weights no other group shares."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 5, 3)
        self.bn = nn.BatchNorm2d(5)
        self.out = nn.Conv2d(5, 1, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.a(x))))


def test_proximal_step_shortens_each_channel_by_the_amount_or_zeroes_it():
    torch.manual_seed(0)
    model = OneGroup()
    with torch.no_grad():
        model.a.weight[1] *= 0.01  # a channel shorter than the step
        model.out.weight[:, 1] *= 0.01
    lasso = GroupLasso(model)
    rows = lambda: torch.cat([model.a.weight.flatten(1), model.out.weight[0].flatten(1)], 1)  # noqa: E731
    before, bias = rows().detach().clone(), model.a.bias.detach().clone()
    amount = 0.2
    lasso.shrink_(model, amount)
    norms = before.norm(dim=1)
    assert norms[1] < amount and norms[[0, 2, 3, 4]].min() > amount
    expected = before * (1 - amount / norms).clamp(min=0)[:, None]
    torch.testing.assert_close(rows().detach(), expected)
    assert torch.count_nonzero(rows()[1]) == 0
    assert torch.equal(model.a.bias, bias)  # a bias is not among a channel's weights


def test_proximal_step_gives_a_shared_weight_both_shares():
    """b's filters are group b's rows and group a's columns: each entry shrinks by both."""
    torch.manual_seed(0)
    model = ConcatIBNorm()
    wa, wb, wo = (model.a.layers[0].weight, model.b.layers[0].weight, model.out.weight)
    with torch.no_grad():
        norms_a = (wa.pow(2).sum((1, 2, 3)) + wb[:, :6].pow(2).sum((0, 2, 3))).sqrt()
        norms_b = (wb.pow(2).sum((1, 2, 3)) + wo.pow(2).sum((0, 2, 3))).sqrt()
        amount = 0.6 * float(torch.cat([norms_a, norms_b]).min())
        s_a, s_b = (amount / norms_a).clamp(max=1), (amount / norms_b).clamp(max=1)
        share = s_b[:, None, None, None] + torch.cat([s_a, torch.zeros(3)])[None, :, None, None]
        expected_b = wb * (1 - share).clamp(min=0)
        expected_o = wo * (1 - s_b)[None, :, None, None]
    GroupLasso(model).shrink_(model, amount)
    torch.testing.assert_close(wb.detach(), expected_b)
    torch.testing.assert_close(wo.detach(), expected_o)


def test_training_with_the_proximal_step_shrinks_the_channels(tmp_path):
    """--group-lasso: the penalty is logged every step, and training lowers it."""
    data = open_dataset("synthetic:8@64", size=64, train=True)
    student = mp.MODNet(divided_arch())
    lasso = GroupLasso(student)
    start = float(lasso(student).detach())
    result = fit(student, data, cfg(steps=8, optimizer="adamw", lr=0.01, group_lasso=20.0),
                 tmp_path / "run", progress=False)
    logged = [r["group_lasso"] for r in RunDir(tmp_path / "run").rows() if r["kind"] == "train"]
    assert len(logged) == 8 and logged[-1] < logged[0]
    assert float(lasso(result.model).detach()) < 0.9 * start
