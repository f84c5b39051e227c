"""Channel dependencies and compute cost of any fx-traceable CNN (knows nothing of MODNet)."""
from .analysis import analyze, trace
from .groups import ChannelGraph, Group, Member

__all__ = ["ChannelGraph", "Group", "Member", "analyze", "trace"]
