import pytest


@pytest.fixture(autouse=True)
def pure_pytorch_compositing(monkeypatch):
    """The render tests check the pure-PyTorch compositing (the reference everywhere); test_numba_backend.py turns
    the compiled one back on."""
    monkeypatch.setenv("OPENLSM_NUMBA", "0")
