"""Evaluation tests run single-threaded: on a shared 2-core machine, torch's default intra-op threads
oversubscribe the cores and made this folder ~10x slower (98 s vs 9 s measured under load)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
