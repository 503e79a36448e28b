"""nanochat/cpu_memory.py: with keep_freed_memory, a step's buffers freed and allocated again are not page-faulted back."""
import os
import subprocess
import sys

import torch

from nanochat.cpu_memory import keep_freed_memory

# a training step's pattern: 128 MB of 8 MB buffers alive together, all freed, again and again
ROUNDS = """
import resource, sys, torch
from nanochat.cpu_memory import keep_freed_memory
print(keep_freed_memory(torch.device(sys.argv[1])))
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [torch.empty(2 << 20).fill_(1.0) for _ in range(16)]
    del buffers
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[3:]))
"""


def late_faults(device):
    """Whether memory was kept, and the page faults of the last three rounds. glibc starts out handing every
    freed buffer back (fixed thresholds: by default they move with what an import happened to allocate and
    free, and a step's buffers are faulted back in some rounds and not others)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", ROUNDS, device], capture_output=True, text=True, check=True,
                         env=env).stdout
    kept, count = out.split()
    return kept == "True", int(count)


def test_freed_buffers_stay_in_the_process_on_a_cpu():
    pages = (128 << 20) // 4096
    kept, with_it = late_faults("cpu")
    assert kept and with_it < pages // 10
    _, without = late_faults("meta")  # not a CPU: malloc left as it is
    assert without > 2 * pages


def test_other_devices_are_left_alone():
    assert not keep_freed_memory(torch.device("meta"))
