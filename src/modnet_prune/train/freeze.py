"""Frozen parts of a model: `TrainConfig.freeze` names module paths that are not trained.

A frozen module keeps its loaded function exactly: no gradient reaches its parameters and
its BatchNorms normalise with the loaded statistics (eval mode; the trainer's `Student`
and `recalibrate_bn` keep it so). Freezing a part the student shares with its teacher (a
backbone the prune left whole) makes the student compute the teacher's features there on
every input, including inputs unlike the training data.
"""
from __future__ import annotations

from torch import nn

from ..errors import UserError


def frozen_modules(model: nn.Module, paths: list[str]) -> tuple[nn.Module, ...]:
    """The modules at `paths`, or one line naming the model's top-level modules."""
    modules = []
    for path in paths:
        try:
            modules.append(model.get_submodule(path))
        except AttributeError:
            names = ", ".join(name for name, _ in model.named_children())
            raise UserError(f"--freeze {path}: the model has no module of that name "
                            f"(its top-level modules: {names})") from None
    return tuple(modules)


def freeze_(model: nn.Module, paths: list[str]) -> tuple[nn.Module, ...]:
    """Turn off the gradients of the modules at `paths` and put them in eval mode; returns
    them. Aliased modules (one module under two names) are frozen under either name."""
    modules = frozen_modules(model, paths)
    for module in modules:
        module.requires_grad_(False).eval()
    return modules
