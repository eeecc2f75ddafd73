"""Differentiable Gaussian rendering: SH evaluation, a PyTorch backend and a gsplat backend with one interface."""

from .render import RenderOutput, gsplat_available, render
from .sh import eval_sh, sh_basis

__all__ = ["RenderOutput", "eval_sh", "gsplat_available", "render", "sh_basis"]
