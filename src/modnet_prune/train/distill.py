"""Feature taps and width adapters for distilling a (pruned) student from its teacher.

Feature distillation compares intermediate maps whose widths differ after pruning. We use
learned 1x1 adapters (student width -> teacher width), not the teacher's kept channels:
- the student is asked to carry *all* of the teacher's information, including what the
  pruned channels held, through a linear map, instead of only copying survivors;
- it works for any student (pruned, hand-narrowed, trained from scratch), with no need to
  carry channel-index bookkeeping through several prune iterations or files;
- adapters are tiny (a 1x1 conv per tap) and are dropped after training.
A random adapter would make the feature loss measure its own noise at first, so adapters
start from a least-squares fit of teacher features on student features (one batch). For a
freshly pruned student this recovers the kept-channel correspondence by itself.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

# Intermediate maps distilled, by official module path (the output of the whole module):
# the semantic branch at 1/16 and 1/8, the detail branch at 1/4 and 1/2, the fusion at 1/2.
FEATURE_TAPS = {"lr16x": "lr_branch.conv_lr16x", "lr8x": "lr_branch.conv_lr8x",
                "hr4x": "hr_branch.conv_hr4x", "hr2x": "hr_branch.conv_hr2x",
                "f2x": "f_branch.conv_f2x"}


def out_channels(module: nn.Module) -> int:
    """Width of a module's output: that of its last conv."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class FeatureTaps:
    """Records the outputs of named submodules on every forward pass (forward hooks)."""

    def __init__(self, model: nn.Module, taps: dict[str, str]):
        self.features: dict[str, Tensor] = {}
        self._handles = [model.get_submodule(path).register_forward_hook(self._recorder(name))
                         for name, path in taps.items()]

    def _recorder(self, name: str):
        def hook(_module, _inputs, output):
            self.features[name] = output
        return hook

    def pop(self) -> dict[str, Tensor]:
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.features = {}


class Student(nn.Module):
    """The trained model plus its feature adapters, as one module (what DDP wraps).

    forward(img) -> ((semantic, detail, matte), {tap: adapted feature}); without
    adapters the dict is empty and this is the plain training forward. `frozen` modules of
    the model stay in eval mode whatever mode the Student is put in.
    """

    def __init__(self, model: nn.Module, teacher_widths: dict[str, int] | None = None,
                 frozen: tuple[nn.Module, ...] = ()):
        super().__init__()
        self.model = model
        self.frozen = tuple(frozen)  # a plain tuple: already registered as parts of model
        widths = teacher_widths or {}
        self.adapters = nn.ModuleDict({
            name: nn.Conv2d(out_channels(model.get_submodule(FEATURE_TAPS[name])), width, 1)
            for name, width in widths.items()})
        self._taps = FeatureTaps(model, {n: FEATURE_TAPS[n] for n in widths})

    def forward(self, img: Tensor):
        outputs = self.model(img, inference=False)
        raw = self._taps.pop()
        return outputs, {name: adapter(raw[name]) for name, adapter in self.adapters.items()}

    def train(self, mode: bool = True) -> "Student":
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def remove_taps(self) -> None:
        self._taps.remove()

    @torch.no_grad()
    def fit_adapters(self, img: Tensor, teacher_features: dict[str, Tensor]) -> None:
        """Least-squares init of each adapter: teacher ~ W @ student + b on this batch.

        The student runs in its current mode (train: batch statistics, as the loss will
        see it); BN running statistics are restored afterwards, so nothing else moves.
        """
        buffers = [(b, b.clone()) for b in self.model.buffers()]
        self.model(img, inference=False)
        for buffer, saved in buffers:
            buffer.copy_(saved)
        raw = self._taps.pop()
        for name, adapter in self.adapters.items():
            weight, bias = _ridge_fit(raw[name], teacher_features[name])
            adapter.weight.copy_(weight[:, :, None, None])
            adapter.bias.copy_(bias)


def _ridge_fit(x: Tensor, y: Tensor, rel_ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(W, b) minimising |y - (W x + b)|^2 over all pixels, with a small ridge for stability."""
    xs = x.transpose(0, 1).flatten(1).double()
    xs = torch.cat([xs, torch.ones_like(xs[:1])])  # the constant row fits the bias
    ys = y.transpose(0, 1).flatten(1).double()
    gram = xs @ xs.T
    ridge = rel_ridge * gram.diagonal().mean().clamp(min=1e-12)
    gram += ridge * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram, xs @ ys.T).T  # (C_teacher, C_student + 1)
    return solution[:, :-1].float(), solution[:, -1].float()


def teacher_widths(teacher: nn.Module, taps: list[str]) -> dict[str, int]:
    return {name: out_channels(teacher.get_submodule(FEATURE_TAPS[name])) for name in taps}
