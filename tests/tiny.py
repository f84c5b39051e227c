"""The smallest MODNet the tests use: every stage, tap and concatenation of the official
structure, with widths of 8 to 32 so that it runs in milliseconds."""
import modnet_prune as mp
from modnet_prune.model.arch import HEAD_CONVS


def tiny_arch() -> mp.Arch:
    return mp.Arch(stem=8, stages=(8, 8, 8, 16, 16, 16, 16), expansion=(16,) * 16, last=32,
                   se_hidden=8, heads=dict.fromkeys(HEAD_CONVS, 8))


def tiny_model() -> mp.MODNet:
    return mp.MODNet(tiny_arch()).eval()
