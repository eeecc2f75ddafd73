"""keep_freed_memory: a freed 30 MB tensor's memory serves the next, 20 MB one without page faults, where glibc by
default unmaps the first and faults in fresh pages for the second (one minor fault per 4 KB page)."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from openlsm.runtime import keep_freed_memory
    assert keep_freed_memory()
def touch(mb):
    torch.empty(mb << 18, dtype=torch.float32).fill_(1.0)
touch(30)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch(20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_tensors_are_reused_without_page_faults():
    pages = (20 << 20) // 4096
    default = _faults("default")
    if default < pages // 2:  # e.g. MALLOC_* tunables set in the environment
        pytest.skip(f"glibc reuses the block here by default too ({default} faults)")
    assert _faults("keep") < pages // 20


def test_cli_sets_it(monkeypatch):
    from openlsm import runtime
    from openlsm.cli import main as cli

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["info"]) == 0
    assert calls == [1]
