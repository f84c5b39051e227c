"""`keep_freed_memory`: a large tensor's freed memory is reused without page faults.

Measured in fresh interpreters (the setting is process-wide): the page faults of touching a
60 MB tensor after a 64 MB one was freed, with and without the setting. glibc maps such a
tensor on its own and unmaps it on free, so without the setting every page of the second
faults; with it, the second lies in the first's pages.
"""
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

PAGES = 60 * 2**20 // 4096
SCRIPT = """
import resource, sys, torch
from modnet_prune.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.empty(64 * 2**18).fill_(1.0)            # 64 MB allocated, touched, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(60 * 2**18).fill_(2.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_touch_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return int(out.stdout.split()[-1])


def test_freed_memory_is_reused_without_page_faults():
    assert _second_touch_faults("default") > PAGES // 2   # unmapped on free, faulted again
    assert _second_touch_faults("keep") < PAGES // 50     # kept mapped
