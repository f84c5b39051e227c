"""Channel dependencies and compute cost of any fx-traceable CNN (knows nothing of MODNet)."""
from . import torch_layers  # noqa: F401  (registers torch.nn's layer kinds)
from .analysis import channel_graph, trace
from .groups import ChannelGraph, Group, Member
from .kinds import LayerKind, kind_of, register
from .propagate import Channels, Unsupported

__all__ = ["ChannelGraph", "Channels", "Group", "LayerKind", "Member", "Unsupported",
           "channel_graph", "kind_of", "register", "trace"]
