"""What the CPU can do with int8 arithmetic, read from /proc/cpuinfo (no heavy imports: the
benchmark's environment block records it)."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Int8Capability:
    """What the CPU does with int8 dot products, and the setting that is safe on it."""

    arch: str
    vnni: bool            # x86 AVX512-VNNI or AVX-VNNI: u8 x s8 sums in 32 bits
    dot_product: bool     # ARM asimddp (SDOT/UDOT)
    reduce_range: bool    # 7-bit weights: x86 without VNNI sums u8 x s8 pairs in 16 bits

    def describe(self) -> str:
        if self.arch == "x86_64":
            return ("x86 with VNNI" if self.vnni else
                    "x86 without VNNI (int8 weights reduced to 7 bits against saturation)")
        return f"{self.arch}" + (" with dot-product" if self.dot_product else "")

    def as_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


def int8_capability(cpuinfo: str | None = None, machine: str | None = None) -> Int8Capability:
    """Read /proc/cpuinfo's flags (or the given text). x86 without VNNI runs ORT's U8S8
    kernels through VPMADDUBSW, whose 16-bit pair sums saturate with full-range weights:
    ORT's advice there is reduce_range (7-bit weights). Measured on a Zen 3 (AVX2): 8-bit
    weights 1.09-1.15x the fp32 teacher's held-out MAD, 7-bit 1.01-1.04x; uint8 weights
    (u8 x u8, no saturation either) ran 1.6x slower than 7-bit (benchmarks/int8.md)."""
    machine = machine or platform.machine()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "i386")
    vnni = x86 and bool(flags & {"avx512_vnni", "avx_vnni"})
    return Int8Capability(arch="x86_64" if x86 else machine, vnni=vnni,
                          dot_product="asimddp" in flags, reduce_range=x86 and not vnni)
