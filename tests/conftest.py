"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run single-threaded: on a shared 2-core machine, intra-op threads only contend on tiny ops."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
