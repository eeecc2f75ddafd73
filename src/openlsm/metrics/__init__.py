"""Image metrics shared by training losses and evaluation."""

from .image import psnr, ssim

__all__ = ["psnr", "ssim"]
