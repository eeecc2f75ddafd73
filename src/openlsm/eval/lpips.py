"""LPIPS (Zhang et al. 2018, VGG-16 variant) from weights the user supplies; never approximated.

    lp = load_lpips("vgg16-397923af.pth", "vgg.pth")   # torchvision VGG-16 + the LPIPS linear layers (lpips v0.1)
    lp = load_lpips("lpips_vgg.pth")                     # or one LPIPS state dict (net.slice*.*, lin*.model.1.*)
    d = lp(pred, gt)                                     # [V, 3, H, W] in [0, 1] -> [V]

Definition: images in [-1, 1] are shifted and scaled per channel (shift (-.030, -.088, -.188), scale (.458, .448,
.450)); VGG-16 activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 are unit-normalised over channels
(eps 1e-10), their squared difference is weighted per channel by a 1x1 linear layer, averaged over the image and
summed over the five layers.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from openlsm.errors import OpenLSMError

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # indices in torchvision's `vgg16.features` after relu1_2 ... relu5_3
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG16:  # module indices equal torchvision's, so `features.{i}` names match its state dict
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(ch, 1, 1, bias=False) for ch in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, images: Tensor) -> list[Tensor]:
        x = (images * 2 - 1 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        """[V, 3, H, W] x2 in [0, 1] (pred clamped) -> [V]."""
        a, b = self.taps(pred.clamp(0, 1).float()), self.taps(gt.float())
        return sum(lin((fa - fb).square()).mean((1, 2, 3)) for lin, fa, fb in zip(self.lins, a, b))


def _read(path: Path) -> dict[str, Tensor]:
    from openlsm.models.checkpoint_io import load_official_checkpoint, model_state_of

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.is_file():
            raise OpenLSMError(f"LPIPS weights not found: {path}")
        return load_file(str(path))
    return model_state_of(load_official_checkpoint(path))


def load_lpips(weights: str | Path, linear: str | Path | None = None) -> LPIPS:
    """LPIPS from torchvision VGG-16 weights (`features.*`) plus the LPIPS linear layers (`lin{i}.model.1.weight`),
    given as one file or two. Raises OpenLSMError when a tensor is missing or mis-shaped."""
    from openlsm.models.checkpoint_io import load_strict

    state = _read(Path(weights))
    if linear is not None:
        state = {**state, **_read(Path(linear))}
    mapped = {}
    for key, value in state.items():
        if m := re.fullmatch(r"(?:net\.slice\d\.|features\.)(\d+)\.(weight|bias)", key):
            if int(m.group(1)) <= TAPS[-1]:
                mapped[f"features.{m.group(1)}.{m.group(2)}"] = value.float()
        elif m := re.fullmatch(r"lin(\d)\.(?:model\.1\.)?weight", key):
            mapped[f"lins.{m.group(1)}.weight"] = value.float()
    model = LPIPS()
    if not any(k.startswith("lins.") for k in mapped):
        raise OpenLSMError("LPIPS needs its linear-layer weights (the lpips package's weights/v0.1/vgg.pth): "
                           "pass them with --lpips-linear, or one full LPIPS state dict")
    load_strict(model, mapped, what="LPIPS weights")
    return model.eval()
