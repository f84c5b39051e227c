"""`Arch`: every channel width of a MODNet in one JSON-serialisable value.

The structure (kernel sizes, strides, which blocks have residual adds, where the raw
image is concatenated) is fixed; only widths vary. The default `Arch()` is the official
model (MobileNetV2 width 1.0, expansion 6, hr_channels 32).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..errors import UserError

# MobileNetV2 stages as (blocks, first stride); channel widths live in Arch.stages.
STAGE_LAYOUT = ((1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1))
# features[i] for i in 1..17: (stage index, stride, has residual add). A block adds its
# input iff it is not the first of its stage. This is fixed by position, never inferred
# from widths: a pruned 64->64 block that had no residual must not gain one.
BLOCKS = tuple(
    (stage, stride if i == 0 else 1, i > 0)
    for stage, (n, stride) in enumerate(STAGE_LAYOUT)
    for i in range(n)
)
ENC2X_BLOCK, ENC4X_BLOCK = 1, 3  # features index whose output the HR branch taps

# Head convs that carry an IBNorm (all prunable), by official module path.
HEAD_CONVS = (
    "lr_branch.conv_lr16x",
    "lr_branch.conv_lr8x",
    "hr_branch.tohr_enc2x",
    "hr_branch.conv_enc2x",
    "hr_branch.tohr_enc4x",
    "hr_branch.conv_enc4x",
    "hr_branch.conv_hr4x.0",
    "hr_branch.conv_hr4x.1",
    "hr_branch.conv_hr4x.2",
    "hr_branch.conv_hr2x.0",
    "hr_branch.conv_hr2x.1",
    "hr_branch.conv_hr2x.2",
    "hr_branch.conv_hr2x.3",
    "hr_branch.conv_hr.0",
    "f_branch.conv_lr4x",
    "f_branch.conv_f2x",
    "f_branch.conv_f.0",
)
# Output heads: always one channel, never pruned.
OUTPUT_CONVS = ("lr_branch.conv_lr", "hr_branch.conv_hr.1", "f_branch.conv_f.1")


def _official_heads(hr: int = 32) -> dict[str, int]:
    widths = dict.fromkeys(HEAD_CONVS, hr)
    widths.update({
        "lr_branch.conv_lr16x": 96,
        "hr_branch.conv_enc4x": 2 * hr,
        "hr_branch.conv_hr4x.0": 2 * hr,
        "hr_branch.conv_hr4x.1": 2 * hr,
        "hr_branch.conv_hr2x.0": 2 * hr,
        "f_branch.conv_f.0": hr // 2,
    })
    return widths


@dataclass(frozen=True)
class Arch:
    """Channel widths of a MODNet. Defaults are the official model."""

    stem: int = 32                                      # features[0] output
    stages: tuple[int, ...] = (16, 24, 32, 64, 96, 160, 320)  # block outputs per stage
    expansion: tuple[int, ...] = tuple(                # hidden width of features[2..17]
        6 * w for w in (16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160)
    )
    last: int = 1280                                    # features[18] = enc32x
    se_hidden: int = 320
    heads: dict[str, int] = field(default_factory=_official_heads)
    # BatchNorm-part channel count of each head IBNorm; None means the official int(C/2).
    ibn_bn: dict[str, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "expansion", tuple(self.expansion))
        if self.ibn_bn is None:
            object.__setattr__(self, "ibn_bn", {k: int(w / 2) for k, w in self.heads.items()})
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(f"invalid Arch: {msg}")

        need(len(self.stages) == len(STAGE_LAYOUT), f"stages needs {len(STAGE_LAYOUT)} widths")
        need(len(self.expansion) == len(BLOCKS) - 1, f"expansion needs {len(BLOCKS) - 1} widths")
        need(set(self.heads) == set(HEAD_CONVS), "heads must name exactly the 17 head convs")
        need(set(self.ibn_bn) == set(HEAD_CONVS), "ibn_bn must name exactly the 17 head convs")
        widths = [self.stem, *self.stages, *self.expansion, self.last, self.se_hidden]
        need(all(isinstance(w, int) and w >= 1 for w in widths + list(self.heads.values())),
             "every width must be a positive int")
        for name, bn in self.ibn_bn.items():
            need(0 <= bn <= self.heads[name], f"{name}: ibn_bn {bn} outside [0, {self.heads[name]}]")

    # --- derived widths -------------------------------------------------------------
    def block_io(self, index: int) -> tuple[int, int, int]:
        """(input, hidden, output) widths of backbone block features[index], 1 <= index <= 17."""
        stage = BLOCKS[index - 1][0]
        inp = self.stem if index == 1 else self.block_io(index - 1)[2]
        hidden = self.stem if index == 1 else self.expansion[index - 2]
        return inp, hidden, self.stages[stage]

    @property
    def enc2x(self) -> int:
        return self.stages[BLOCKS[ENC2X_BLOCK - 1][0]]

    @property
    def enc4x(self) -> int:
        return self.stages[BLOCKS[ENC4X_BLOCK - 1][0]]

    # --- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"], d["expansion"] = list(self.stages), list(self.expansion)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"invalid Arch: unknown fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"invalid Arch JSON: {e}") from e
        return cls.from_dict(d)

    def diff(self, other: "Arch" | None = None) -> dict[str, tuple[int, int]]:
        """Widths that differ from `other` (default: official) as {name: (theirs, ours)}."""
        ref, out = other or Arch(), {}
        pairs = [("stem", ref.stem, self.stem), ("last", ref.last, self.last),
                 ("se_hidden", ref.se_hidden, self.se_hidden)]
        pairs += [(f"stages[{i}]", a, b) for i, (a, b) in enumerate(zip(ref.stages, self.stages))]
        pairs += [(f"expansion[{i}]", a, b)
                  for i, (a, b) in enumerate(zip(ref.expansion, self.expansion))]
        pairs += [(k, ref.heads[k], self.heads[k]) for k in HEAD_CONVS]
        pairs += [(f"{k} (bn)", ref.ibn_bn[k], self.ibn_bn[k]) for k in HEAD_CONVS]
        for name, a, b in pairs:
            if a != b:
                out[name] = (a, b)
        return out
