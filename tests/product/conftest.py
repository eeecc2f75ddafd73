"""Shared fixtures for the product tests: a tiny LSM checkpoint, a deterministic text encoder, CLI runners."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from openlsm.models.semantics.text import TextEncoder

# Runs the real `openlsm.cli.main.main`; registers the product commands only if main.py does not list them yet.
CLI_SCRIPT = """
import sys
from openlsm.cli import main as m
orig = m._commands
def commands():
    d = orig()
    from openlsm.cli.demo import Demo
    from openlsm.cli.export import Export
    from openlsm.cli.reconstruct import Reconstruct
    from openlsm.cli.segment import Segment
    for k, v in {"demo": Demo, "reconstruct": Reconstruct, "segment": Segment, "export": Export}.items():
        d.setdefault(k, v)
    return d
m._commands = commands
sys.exit(m.main(sys.argv[1:]))
"""


def _register(monkeypatch):
    from openlsm.cli import main as m

    orig = m._commands

    def commands():
        from openlsm.cli.demo import Demo
        from openlsm.cli.export import Export
        from openlsm.cli.reconstruct import Reconstruct
        from openlsm.cli.segment import Segment

        d = orig()
        for k, v in {"demo": Demo, "reconstruct": Reconstruct, "segment": Segment, "export": Export}.items():
            d.setdefault(k, v)
        return d

    monkeypatch.setattr(m, "_commands", commands)
    return m.main


@pytest.fixture
def cli(monkeypatch):
    """main(argv) -> exit code, in process."""
    return _register(monkeypatch)


def run_cli(argv: list) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of main(argv) in process (usable from module-scoped fixtures)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _register(mp)([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def run_cli_subprocess(args: list[str], cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI_SCRIPT, *map(str, args)], capture_output=True, text=True, check=False,
                          cwd=cwd, timeout=300)


class HashTextEncoder(TextEncoder):
    """Deterministic pseudo-random unit embeddings per string (stands in for MiniLM in a 16-d space)."""

    name = "hash16"

    def __init__(self, dim: int = 16):
        super().__init__("cpu")
        self.dim = dim

    def _encode_batch(self, texts):
        return torch.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
                            for t in texts])


@pytest.fixture(scope="session")
def hash_encoder():
    return HashTextEncoder(16)


@pytest.fixture(scope="session")
def tiny_model():
    from openlsm.models.lsm.model import LSM, LSMConfig

    torch.manual_seed(0)
    return LSM(LSMConfig.tiny()).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from openlsm.reconstruct import save_lsm

    return save_lsm(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def minilm_checkpoint(tmp_path_factory):
    """Tiny LSM whose semantic space is MiniLM's (384-d), so the CLI decodes labels with the real encoder."""
    from openlsm.models.lsm.model import LSM
    from openlsm.reconstruct import fallback_config, save_lsm

    torch.manual_seed(1)
    return save_lsm(LSM(fallback_config()), tmp_path_factory.mktemp("ckpt") / "tiny384")


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random colour image (uint8 [h, w, 3])."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def photo_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    a, b = d / "a.png", d / "b.jpg"
    Image.fromarray(smooth_image(40, 52, 0)).save(a)
    Image.fromarray(smooth_image(45, 36, 1)).save(b, quality=95)
    return a, b
