"""A small fake `openlsm reconstruct` output folder for the viewer tests, and a fake text encoder.

Four bright blobs sit 3 m in front of camera 0 (identity pose, OpenCV): red at +x (right in the image), green at
-x (left), yellow at +y (down), magenta at -y (up). Each blob's 64-d features are u_k + noise; the feature map
sends u_k to the fake encoder's embedding of the blob's name, so semantic queries have a known answer.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from openlsm.cameras import Cameras, look_at, make_K
from openlsm.cameras.io import write_cameras_json
from openlsm.gaussians import Gaussians, rgb_to_sh0, save_ply

NAMES = ["red", "green", "yellow", "magenta"]
COLORS = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0], [1.0, 0, 1.0]])
OFFSETS = torch.tensor([[0.8, 0, 3.0], [-0.8, 0, 3.0], [0, 0.6, 3.0], [0, -0.6, 3.0]])  # camera 0 frame
FEAT, TEXT = 64, 384


def make_parts(per_blob: int = 700, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(len(NAMES), FEAT, generator=g)  # [4, 64] blob feature centres
    W = torch.randn(TEXT, FEAT, generator=g) / FEAT**0.5  # [384, 64]
    b = 0.1 * torch.randn(TEXT, generator=g)  # [384]
    ids = torch.arange(len(NAMES)).repeat_interleave(per_blob)  # [N]
    n = len(ids)
    means = OFFSETS[ids] + 0.22 * torch.randn(n, 3, generator=g).clamp(-1.5, 1.5)
    gauss = Gaussians(means=means, quats=torch.randn(n, 4, generator=g), log_scales=torch.full((n, 3), -3.2),
                      opacity_logits=torch.full((n,), 4.0), sh=rgb_to_sh0(COLORS[ids])[:, None, :],
                      features=U[ids] + 0.05 * torch.randn(n, FEAT, generator=g))
    return gauss, ids, U, W, b


def make_cameras() -> Cameras:
    c2w = torch.stack([torch.eye(4), look_at(torch.tensor([1.0, -0.3, 0.0]), torch.tensor([0.0, 0.0, 3.0]))])
    K = make_K(200.0, 200.0, 128.0, 96.0)
    return Cameras(K.expand(2, 3, 3).clone(), c2w, 256, 192)


def write_fake_output(folder, per_blob: int = 700, seed: int = 0, feature_map: bool = True):
    """Write gaussians.ply, cameras.json, feature_map.safetensors and labels.json; return (ids, U, W, b)."""
    folder.mkdir(parents=True, exist_ok=True)
    gauss, ids, U, W, b = make_parts(per_blob, seed)
    save_ply(folder / "gaussians.ply", gauss)
    write_cameras_json(folder / "cameras.json", make_cameras(), ["view_0.png", "view_1.png"])
    if feature_map:
        save_file({"weight": W, "bias": b}, str(folder / "feature_map.safetensors"))  # as Scene.save writes it
    (folder / "labels.json").write_text(json.dumps(NAMES))
    return ids, U, W, b


class FakeEncoder:
    """encode(texts) -> [N, 384] unit vectors: a text naming blob k gives normalize(W u_k + b); any other text a
    fixed random vector (stable per string), far from every blob."""

    def __init__(self, U, W, b):
        self.blob = F.normalize(U @ W.T + b, dim=-1)  # [4, 384]
        self.calls = 0

    def encode(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.calls += 1
        rows = []
        for t in texts:
            hit = [k for k, n in enumerate(NAMES) if n in t]
            if hit:
                rows.append(self.blob[hit[0]])
            else:
                g = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(t)))
                rows.append(F.normalize(torch.randn(TEXT, generator=g), dim=0))
        return torch.stack(rows)
