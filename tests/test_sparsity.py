"""The group-lasso penalty (prune/sparsity.py): its value by hand, and training under it."""
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


def test_training_under_the_penalty_shrinks_it(tmp_path):
    """--group-lasso: the penalty is a logged term of the loss, and with the ground-truth
    term weighted down (a random model's weights grow fast under it) training lowers it."""
    data = open_dataset("synthetic:8@64", size=64, train=True)
    student = mp.MODNet(divided_arch())
    lasso = GroupLasso(student)
    start = float(lasso(student).detach())
    result = fit(student, data, cfg(steps=8, optimizer="adamw", lr=0.01, group_lasso=1.0,
                                      supervised=1e-3),
                 tmp_path / "run", progress=False)
    logged = [r["group_lasso"] for r in RunDir(tmp_path / "run").rows() if r["kind"] == "train"]
    assert len(logged) == 8 and logged[-1] < logged[0]
    assert float(lasso(result.model).detach()) < 0.95 * start
