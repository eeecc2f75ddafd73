"""Shared fixtures."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels (the GPU kNN) run in Triton's CPU interpreter here. Triton reads this when its language
    # module is first imported, which torch may do in any earlier test: so it is set before any test runs.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """Run single-threaded: on a shared 2-core machine, intra-op threads only contend on tiny ops."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
