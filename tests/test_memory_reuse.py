"""`keep_freed_memory`: a large tensor's freed memory is reused without page faults; and
`release_inherited_memory`: forked children (the training loader's workers) give it back.

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


# A forked child shares the parent's kept free pages; what it still maps of them shows in
# its resident set. The child reports how many MB of its resident set the release dropped.
FORK_SCRIPT = """
import os, sys, torch
from modnet_prune.memory import keep_freed_memory, release_inherited_memory
assert keep_freed_memory()
torch.empty(200 * 2**18).fill_(1.0)           # 200 MB touched, freed, kept in the heap
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
read, write = os.pipe()
if os.fork() == 0:
    before = rss_mb()
    if sys.argv[1] == "release":
        release_inherited_memory()
    os.write(write, str(before - rss_mb()).encode())
    os._exit(0)
os.wait()
print(os.read(read, 64).decode())
"""


def _rss_dropped_in_child(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, mode], capture_output=True,
                         text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return int(out.stdout.split()[-1])


def test_a_forked_child_gives_back_the_inherited_free_memory():
    assert _rss_dropped_in_child("keep") < 10
    assert _rss_dropped_in_child("release") > 150


LOADER_SCRIPT = """
import os, torch
from modnet_prune.memory import keep_freed_memory
from modnet_prune.train.distributed import Context
from modnet_prune.train.loader import Batches
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
class WorkerRss(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return {"rss": rss_mb()}
assert keep_freed_memory()
torch.empty(200 * 2**18).fill_(1.0)
parent = rss_mb()
batch = next(Batches(WorkerRss(), 2, Context(), seed=0, workers=1).from_step(0))
print(parent, int(batch["rss"][0]))
"""


def test_training_loader_workers_do_not_hold_the_trainers_free_memory():
    out = subprocess.run([sys.executable, "-c", LOADER_SCRIPT], capture_output=True,
                         text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    parent, worker = map(int, out.stdout.split()[-2:])
    assert worker < parent - 150
