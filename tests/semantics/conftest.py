"""Shared fixtures for the semantics tests: one MiniLM encoder per session, a synthetic labelled shape dataset."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def minilm():
    from openlsm.models.semantics import get_text_encoder

    return get_text_encoder("minilm")


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images [n,3,size,size] in [0,1] with labels [n,size,size]: class 0 = grey noisy background,
    1 = red rectangle, 2 = green horizontal stripes, 3 = blue disc (colour and texture both carry the class)."""
    g = torch.Generator().manual_seed(seed)
    images = 0.5 + 0.1 * torch.randn(n, 3, size, size, generator=g)
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        for cls in torch.randperm(3, generator=g).tolist():
            cls += 1
            cy, cx = torch.randint(4, size - 4, (2,), generator=g).tolist()
            r = int(torch.randint(3, size // 4, (1,), generator=g))
            if cls == 1:
                mask = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r // 2 + 1)
                colour = torch.tensor([0.9, 0.2, 0.2])
            elif cls == 2:
                mask = ((yy - cy).abs() <= r // 2 + 1) & ((xx - cx).abs() <= r)
                colour = torch.tensor([0.2, 0.8, 0.2])
            else:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                colour = torch.tensor([0.2, 0.3, 0.9])
            pixels = colour[:, None, None] + 0.05 * torch.randn(3, size, size, generator=g)
            if cls == 2:
                pixels = pixels * (0.6 + 0.4 * (yy % 4 < 2).float())  # stripes
            images[i] = torch.where(mask, pixels, images[i])
            labels[i][mask] = cls
    return images.clamp(0, 1), labels


@pytest.fixture(scope="session")
def shapes():
    return make_shapes
