"""Trainer checkpoints: one file with everything a bit-exact resume needs, written atomically.

    save_checkpoint(path, {"step": 100, "model": ..., "optimizer": ..., "rng": rng_states(), ...})
    state = load_checkpoint(path)             # plain tensors / numbers only (weights_only loading)
    model = load_trained_model(path)          # LSM rebuilt from the run's preset, weights loaded, eval mode
    model = load_trained_model("run/model")   # the trainer's final LSM.save folder (what `openlsm eval` takes)
    export_weights(state["model"], "run/weights", state["train_config"], step=100)   # bf16 safetensors shards
    model = load_trained_model("run/weights")  # the same, from the exported shards

The full checkpoint of `small` (weights + AdamW moments) is ~300 MB; the export (weights only, bf16, shards of at
most 15 MiB) is small enough to copy off a remote machine, for evaluation or as `--init` of a new run.

The file holds plain containers of tensors, numbers and strings (RNG states included), so it loads with
`torch.load(weights_only=True)`: no pickled code runs when a checkpoint is opened.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from openlsm.errors import OpenLSMError

FORMAT = "openlsm-train-v1"
EXPORT_FORMAT = "openlsm-weights-v1"


def rng_states() -> dict:
    """Python, numpy, torch CPU and every CUDA device's generator state, as plain data."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"python": [py_version, list(py_state), py_gauss],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    py_version, py_state, py_gauss = states["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """torch.save to a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise OpenLSMError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # truncated / not torch
        raise OpenLSMError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise OpenLSMError(f"{path} is not an openlsm training checkpoint")
    return state


def is_trainer_checkpoint(path: str | os.PathLike) -> bool:
    try:
        load_checkpoint(path)
        return True
    except OpenLSMError:
        return False


def make_readable(folder: Path) -> None:
    """Files written through mkstemp are private (0600); results should look like any new file."""
    umask = os.umask(0)
    os.umask(umask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def export_weights(model_state: dict, folder: str | os.PathLike, train_config: dict, step: int,
                   dtype: torch.dtype = torch.bfloat16, shard_mb: float = 15.0) -> list[Path]:
    """Write model weights as safetensors shards `model-00001-of-0000N.safetensors` (floating tensors cast to
    `dtype`) with the train config in each shard's metadata. The folder is replaced atomically."""
    from safetensors.torch import save_file

    from openlsm.io.outputs import output_folder

    shards: list[dict] = [{}]
    size = 0
    for name, t in model_state.items():
        t = (t.to(dtype) if t.is_floating_point() else t).detach().cpu().contiguous()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_mb * 2**20:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    meta = {"format": EXPORT_FORMAT, "train_config": json.dumps(train_config), "step": str(int(step)),
            "dtype": str(dtype).removeprefix("torch.")}
    folder = Path(folder)
    with output_folder(folder, overwrite=True) as tmp:
        for i, shard in enumerate(shards):
            save_file(shard, str(tmp / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"), metadata=meta)
        make_readable(tmp)
    return sorted(folder.glob("model-*.safetensors"))


def load_exported_weights(folder: str | os.PathLike) -> tuple[dict, dict]:
    """(float32 state dict, metadata with 'train_config' as a dict) of an export_weights folder."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("model-*-of-*.safetensors"))
    if not files:
        raise OpenLSMError(f"no exported weights (model-*-of-*.safetensors) in {folder}")
    state, meta = {}, {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != EXPORT_FORMAT:
                raise OpenLSMError(f"{f.name} is not an openlsm weights export")
            for k in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                t = fh.get_tensor(k)
                state[k] = t.float() if t.is_floating_point() else t
    expected = int(files[0].name.split("-of-")[1].split(".")[0])
    if len(files) != expected:
        raise OpenLSMError(f"{folder} holds {len(files)} of {expected} weight shards")
    return state, {**meta, "train_config": json.loads(meta["train_config"])}


def is_saved_model(path: str | os.PathLike) -> bool:
    """An `LSM.save` output: a folder with model.safetensors + config.json (or that model.safetensors)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file() and \
        (p.is_dir() or p.name == "model.safetensors")


def read_weights(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """(model state, train config or None) from a trainer checkpoint, a weights export or an LSM.save folder."""
    if is_saved_model(path):
        from openlsm.models.lsm.model import LSM

        return LSM.load(path).state_dict(), None
    if Path(path).is_dir():
        state, meta = load_exported_weights(path)
        return state, meta["train_config"]
    ckpt = load_checkpoint(path)
    return ckpt["model"], ckpt["train_config"]


def load_trained_model(path: str | os.PathLike, device="cpu"):
    """The LSM of a training checkpoint, weights export or LSM.save folder, in eval mode (fp32)."""
    from openlsm.models.lsm.model import LSM, LSMConfig

    if is_saved_model(path):
        return LSM.load(path, device)
    state, config = read_weights(path)
    model = LSM(LSMConfig.preset(config["model"]))
    model.load_state_dict(state)
    return model.to(device).eval()
