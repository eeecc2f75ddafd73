"""Training tests run single-threaded (the `one_thread` fixture of tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
