"""Models and data for evaluation (small and swappable).

    model, info = load_eval_model(None, "tiny", device)              # random weights (smoke tests)
    model, info = load_eval_model(Path("ckpt.pth"), "paper", device)  # official LSM checkpoint
    data = open_dataset("synthrooms:test", resolution=256, views=3, scenes=40)   # or "scannet-test:PATH"
    sample = data.dataset[0]; data.class_names; data.ignore_ids

Checkpoints: with a preset, any state dict (official `.pth`, trainer checkpoint, `.safetensors`, `save_model`
folder) is loaded strictly into `LSM(LSMConfig.preset(preset))`; without one, the trainer's loader handles its
checkpoints, exports and `LSM.save` folders, and other files are official LSM checkpoints (`paper`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from openlsm.errors import OpenLSMError


def load_eval_model(checkpoint: Path | None, preset: str | None, device: torch.device, seed: int = 0):
    """(model in eval mode on `device`, {"source", "preset", "semantic", "semantic_dim", "parameters"}).

    No checkpoint: random weights of `preset` (seeded). With `preset`: the file's state dict (official `.pth`,
    trainer checkpoint, `.safetensors`, `save_model` folder) is loaded strictly into `LSM(preset)`. Without:
    folders and trainer checkpoints go through `openlsm.train.checkpoint.load_trained_model` (their own
    preset), any other file is taken as an official LSM checkpoint (`paper` preset)."""
    from openlsm.models.lsm.model import LSM, LSMConfig, count_parameters, load_official_lsm_checkpoint

    if checkpoint is None:
        if preset is None:
            raise OpenLSMError("give --checkpoint PATH or --preset NAME (random weights)")
        torch.manual_seed(seed)
        model, source = LSM(LSMConfig.preset(preset)), f"random weights (preset {preset}, seed {seed})"
    else:
        path = Path(checkpoint)
        if not path.exists():
            raise OpenLSMError(f"checkpoint not found: {path}")
        source = f"checkpoint {path}"
        if preset is not None:
            model = LSM(LSMConfig.preset(preset))
            load_official_lsm_checkpoint(model, _read_state(path), strict=True)
            source += f" (preset {preset})"
        elif path.is_dir() or path.suffix == ".safetensors":
            model = _trained_model(path)
        else:
            from openlsm.models.checkpoint_io import load_official_checkpoint

            ckpt = load_official_checkpoint(path)
            if str(ckpt.get("format", "")).startswith("openlsm-train"):
                del ckpt
                model = _trained_model(path)
            else:
                model = LSM(LSMConfig.paper())
                load_official_lsm_checkpoint(model, ckpt, strict=True)
                source += " (official, preset paper)"
    model = model.to(device).eval()
    info = {"source": source, "preset": preset, "semantic": model.config.semantic,
            "semantic_dim": model.config.semantic_dim, "parameters": count_parameters(model)}
    return model, info


def _trained_model(path: Path):
    """A trainer checkpoint, weights export or LSM.save folder, through the trainer's own loader."""
    try:
        from openlsm.train.checkpoint import load_trained_model
    except ImportError:
        raise OpenLSMError(f"cannot tell the model of {path}: pass --preset tiny|small|paper") from None
    return load_trained_model(path)


def _read_state(path: Path) -> dict:
    """A checkpoint dict for `load_official_lsm_checkpoint` (it takes `['model']` or a plain state dict)."""
    if path.is_dir() or path.suffix == ".safetensors":
        from openlsm.models.checkpoint_io import load_state

        return load_state(path)[0]
    from openlsm.models.checkpoint_io import load_official_checkpoint

    return load_official_checkpoint(path)


@dataclass
class EvalData:
    dataset: object  # map-style: dataset[i] -> dict (images [V,3,H,W] in [0,1], depths, valid, Ks, c2w, labels?)
    class_names: list[str] | None  # index = label id in the samples; None: the data has no semantic labels
    ignore_ids: tuple[int, ...]  # label ids never scored (void / unlabelled)
    description: str
    length: int  # scenes to evaluate


def open_dataset(spec: str, resolution: int, views: int, scenes: int, device=None) -> EvalData:
    """`synthrooms[:split]` (test by default), or any `openlsm.data.loaders.load_dataset` spec (its test split,
    e.g. `scannet-test:data/scannet_test`). Views 0, 1 are the inputs, 2.. the targets. SynthRooms scenes are
ray-cast on `device` (fast on a GPU)."""
    name, _, rest = spec.partition(":")
    if views < 3:
        raise OpenLSMError(f"evaluation needs at least 3 views (2 inputs + targets), got {views}")
    if scenes < 1:
        raise OpenLSMError(f"--scenes must be >= 1, got {scenes}")
    if name == "synthrooms":
        from openlsm.data.synthrooms import CLASSES, SynthRooms

        split = rest or "test"
        ds = SynthRooms(split, resolution, views=views, length=scenes, device=device)
        return EvalData(ds, list(CLASSES), (CLASSES.index("void"),), f"SynthRooms {split}", scenes)
    from openlsm.data.loaders import LSM_CLASSES, load_dataset, parse_spec

    layout = parse_spec(spec)[0]
    ds = load_dataset(spec, split="test", resolution=resolution, views=views)
    if len(ds) == 0:
        raise OpenLSMError(f"dataset {spec!r} has no samples")
    if layout == "scannet-test":  # LSM's 8 classes, id 0 = unlabelled
        names, ignore = ["unlabelled", *LSM_CLASSES], (0,)
    else:
        names, ignore = None, ()
    return EvalData(ds, names, ignore, f"{layout} {spec.partition(':')[2] or ''}".strip(), min(scenes, len(ds)))
