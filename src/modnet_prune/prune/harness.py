"""How the pruner calls a model: inputs at a size, the arguments that run every output,
and how a sliced copy becomes a model again. MODNet is the one model that needs more than
the defaults (its `inference` flag, sizes that are multiples of 32, an `Arch`)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UserError
from ..memory import require_forward
from ..model import MODNet
from ..model.inputs import MULTIPLE, check_size
from ..model.io import model_from_state_dict

Size = tuple[int, int]
InputFn = Callable[[Size, int, torch.Generator], tuple]


def image_inputs(size: Size, batch: int, generator: torch.Generator) -> tuple[torch.Tensor]:
    """A batch of random normal RGB images: the default input of an image CNN."""
    return (torch.randn(batch, 3, *size, generator=generator),)


def _synthetic_portraits() -> Iterable[dict]:
    """Calibration images for data-driven criteria: a few synthetic portraits at 128x128."""
    from ..data import open_dataset  # data/ is heavier and only needed by `taylor`
    return open_dataset("synthetic:8@128", size=128, train=False)


def _rebuild_modnet(model: nn.Module) -> MODNet:
    """A MODNet whose `Arch` is read back from the sliced tensors (so save/load round-trip),
    on the device the sliced model was on."""
    device = next(model.parameters()).device
    return model_from_state_dict(model.state_dict(), source="pruned model").to(device)


@dataclass(frozen=True)
class Harness:
    inputs: InputFn = image_inputs
    full: dict = field(default_factory=dict)  # forward kwargs that run every output
    multiple: int = 1                         # H and W must be multiples of this
    analysis_size: Size = (64, 64)
    verify_sizes: tuple[Size, ...] = ((64, 64), (96, 64))
    rebuild: Callable[[nn.Module], nn.Module] = lambda m: m
    calibration: Callable[[], Iterable] | None = None  # default data for `taylor`

    def make(self, model: nn.Module, size: Size, batch: int = 1, seed: int = 0) -> tuple:
        """Inputs on the model's device, reproducible from `seed`."""
        generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        return tuple(x.to(device) for x in self.inputs(size, batch, generator))

    def check_size(self, size: int | Size) -> Size:
        h, w = check_size(tuple(size) if not isinstance(size, int) else (size, size),
                          multiple=self.multiple)
        require_forward(h, w, what=f"size {h}x{w}: a forward pass")
        return h, w

    def batches(self, model: nn.Module, data: Iterable | None, what: str) -> Iterator[tuple]:
        """Input tuples from `data` (input batches, single CHW images, or dicts with
        "image"), on the model's device, for the data-driven step `what` (named in errors).

        Without data: the harness's calibration set (synthetic portraits for MODNet), else
        random normal images, without end.
        """
        if data is None and self.calibration is not None:
            data = self.calibration()
        if data is None:
            for seed in range(10**9):
                yield self.make(model, (128, 128), batch=2, seed=seed)
            return
        device = next(model.parameters()).device
        for item in data:
            image = item["image"] if isinstance(item, dict) else item
            if not isinstance(image, torch.Tensor) or image.dim() < 2:
                raise UserError(f"{what}: data items must be batches (tensors) or dicts "
                                "with 'image'")
            yield ((image[None] if image.dim() == 3 else image).to(device),)


MODNET = Harness(full={"inference": False}, multiple=MULTIPLE, rebuild=_rebuild_modnet,
                 calibration=_synthetic_portraits)


def harness_for(model: nn.Module, inputs: InputFn | None = None) -> Harness:
    if isinstance(model, MODNet):
        return MODNET
    return Harness(inputs=inputs or image_inputs)
