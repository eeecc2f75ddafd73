"""Checkpoint I/O: safe loading of official `.pth` files, key/shape reports, strict loading with tied-key
handling, and our own format (safetensors weights + JSON config, written atomically).

    ckpt = load_official_checkpoint("DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth")  # never runs pickled code
    net = load_dust3r_checkpoint("DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth")     # -> GeometryNet (paper)
    save_model("runs/geo", net, net.config)
    net2 = load_geometry_net("runs/geo")
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from openlsm.errors import OpenLSMError
from openlsm.io.atomic import atomic_write

LSM_DUST3R_PREFIX = "dust3r.dust3r."
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


# --- safe loading of official checkpoints ------------------------------------------------------------------------

def load_official_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load with weights_only=True; only tensors, containers and argparse.Namespace are allowed.

    Anything else in the pickle (e.g. a `__reduce__` calling os.system) is refused before it can run."""
    path = Path(path)
    if not path.is_file():
        raise OpenLSMError(f"checkpoint not found: {path}")
    # torch < 2.5 has no scoped allow-list: such versions load plain weight files but refuse the Namespace.
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    allow = safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()
    try:
        with allow:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[-1] if lines else "")
        raise OpenLSMError(f"refusing to load {path}: it holds objects other than weights, which could run "
                           f"code when unpickled ({why})") from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise OpenLSMError(f"cannot read checkpoint {path}: {str(e).strip().splitlines()[0]}") from e
    if not isinstance(ckpt, dict):
        raise OpenLSMError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def model_state_of(ckpt: dict) -> dict[str, Tensor]:
    """The weights of a checkpoint dict: `ckpt['model']` (croco/dust3r/LSM), `ckpt['state_dict']`, or itself."""
    for key in ("model", "state_dict"):
        if key in ckpt and isinstance(ckpt[key], Mapping):
            return dict(ckpt[key])
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise OpenLSMError(f"no weights found in checkpoint (keys: {sorted(ckpt)[:8]})")


# --- key reports and strict loading ------------------------------------------------------------------------------

@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, model shape, ckpt shape)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        if self.ok:
            return "all keys match"

        def few(keys):
            return ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5})" if len(keys) > 5 else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing [{few(self.missing)}]")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected [{few(self.unexpected)}]")
        if self.mismatched:
            shapes = [f"{k}: model {list(a)} vs checkpoint {list(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} mis-shaped [{few(shapes)}]")
        return "; ".join(parts)


def report_keys(model_state: Mapping[str, Tensor], ckpt_state: Mapping[str, Tensor]) -> KeyReport:
    """Compare names and shapes (order-preserving lists)."""
    return KeyReport(
        missing=[k for k in model_state if k not in ckpt_state],
        unexpected=[k for k in ckpt_state if k not in model_state],
        mismatched=[(k, tuple(v.shape), tuple(ckpt_state[k].shape)) for k, v in model_state.items()
                    if k in ckpt_state and tuple(v.shape) != tuple(ckpt_state[k].shape)],
    )


def tied_keys(module: nn.Module) -> dict[str, list[str]]:
    """Groups of state-dict names that refer to the same tensor: {first name: [all names]}."""
    groups: dict[int, list[str]] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), []).append(name)
    return {names[0]: names for names in groups.values() if len(names) > 1}


def complete_tied(module: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fill absent names of tied tensors from whichever alias the state has (e.g. DPT `layer1_rn` / `layer_rn.0`)."""
    state = dict(state)
    for names in tied_keys(module).values():
        present = [n for n in names if n in state]
        for n in names:
            if n not in state and present:
                state[n] = state[present[0]]
    return state


def load_strict(module: nn.Module, state: Mapping[str, Tensor], alias_map: Mapping[str, str] | None = None,
                what: str = "checkpoint") -> KeyReport:
    """Load `state` into `module`, requiring every key and shape to match (after renaming keys by `alias_map`
    {checkpoint name: model name} and filling tied aliases). Raises OpenLSMError with the report otherwise."""
    state = {(alias_map or {}).get(k, k): v for k, v in state.items()}
    state = complete_tied(module, state)
    report = report_keys(module.state_dict(), state)
    if not report.ok:
        raise OpenLSMError(f"{what} does not fit {type(module).__name__}: {report}")
    module.load_state_dict(state, strict=True)
    return report


# --- official DUSt3R / LSM checkpoints -----------------------------------------------------------------------------

_INT_ARGS = {"enc_embed_dim": "enc_dim", "enc_depth": "enc_depth", "enc_num_heads": "enc_heads",
             "dec_embed_dim": "dec_dim", "dec_depth": "dec_depth", "dec_num_heads": "dec_heads"}


def geometry_config_from_checkpoint(state: Mapping[str, Tensor], model_string: str | None = None):
    """GeometryConfig from a DUSt3R model string (`ckpt['args'].model`, parsed with regexes, never evaluated)
    and the DPT widths found in the weights. Without a string the head counts of the paper model are assumed."""
    from openlsm.models.lsm.geometry import GeometryConfig

    cfg = GeometryConfig.paper()
    if model_string:
        if "head_type" in model_string and not re.search(r"head_type\s*=\s*['\"]dpt['\"]", model_string):
            raise OpenLSMError("only DUSt3R checkpoints with a DPT head are supported (got a different head_type)")
        rope = re.search(r"pos_embed\s*=\s*['\"]RoPE(\d+)['\"]", model_string)
        if "pos_embed" in model_string and not rope:
            raise OpenLSMError("only DUSt3R checkpoints with RoPE position embeddings are supported")
        if rope:
            cfg.rope_base = float(rope.group(1))
        for arg, name in _INT_ARGS.items():
            m = re.search(rf"\b{arg}\s*=\s*(\d+)", model_string)
            if m:
                setattr(cfg, name, int(m.group(1)))
    # Shapes the string does not carry (or the string is absent): read them off the weights.
    pre = "downstream_head1.dpt."
    if "patch_embed.proj.weight" in state:
        w = state["patch_embed.proj.weight"]
        cfg.enc_dim, cfg.patch_size = w.shape[0], w.shape[-1]
    if "decoder_embed.weight" in state:
        cfg.dec_dim = state["decoder_embed.weight"].shape[0]
    n_enc = {int(k.split(".")[1]) for k in state if k.startswith("enc_blocks.")}
    n_dec = {int(k.split(".")[1]) for k in state if k.startswith("dec_blocks.")}
    cfg.enc_depth = len(n_enc) or cfg.enc_depth
    cfg.dec_depth = len(n_dec) or cfg.dec_depth
    if f"{pre}act_postprocess.0.0.weight" in state:
        cfg.dpt_layer_dims = [state[f"{pre}act_postprocess.{i}.0.weight"].shape[0] for i in range(4)]
        cfg.dpt_feature_dim = state[f"{pre}scratch.refinenet1.out_conv.weight"].shape[0]
        cfg.dpt_last_dim = state[f"{pre}head.2.weight"].shape[0]
    return cfg


def dust3r_state_from_lsm(lsm_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The `dust3r.dust3r.` block of an LSM checkpoint's `model` dict, prefix stripped."""
    out = {k[len(LSM_DUST3R_PREFIX):]: v for k, v in lsm_state.items() if k.startswith(LSM_DUST3R_PREFIX)}
    if not out:
        raise OpenLSMError(f"no '{LSM_DUST3R_PREFIX}*' weights in this LSM checkpoint")
    return out


def _fill_second_decoder(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """naver checkpoints may omit `dec_blocks2.*`; the official loader starts it as a copy of `dec_blocks.*`."""
    if not any(k.startswith("dec_blocks2.") for k in state):
        state.update({"dec_blocks2." + k[len("dec_blocks."):]: v.clone()
                      for k, v in list(state.items()) if k.startswith("dec_blocks.")})
    return state


def load_dust3r_state(state: Mapping[str, Tensor], model_string: str | None = None, net=None):
    """GeometryNet from a DUSt3R state dict (naver key names); builds one from the weights if `net` is None."""
    from openlsm.models.lsm.geometry import GeometryNet

    state = _fill_second_decoder(dict(state))
    if net is None:
        net = GeometryNet(geometry_config_from_checkpoint(state, model_string))
    load_strict(net, state, what="DUSt3R checkpoint")
    return net


def _model_string(ckpt: dict) -> str | None:
    args = ckpt.get("args")
    model = getattr(args, "model", None) if args is not None else None
    return model if isinstance(model, str) else None


def load_dust3r_checkpoint(path: str | os.PathLike, net=None):
    """naver DUSt3R `.pth` (`ckpt['model']`, `ckpt['args'].model`) -> GeometryNet with its weights."""
    ckpt = load_official_checkpoint(path)
    return load_dust3r_state(model_state_of(ckpt), _model_string(ckpt), net)


def load_lsm_dust3r(path: str | os.PathLike, net=None):
    """The (fine-tuned) DUSt3R inside an LSM checkpoint -> GeometryNet."""
    ckpt = load_official_checkpoint(path)
    state = dust3r_state_from_lsm(model_state_of(ckpt))
    model_string = _model_string(ckpt)
    # LSM's args.model is "LSM_Dust3R(config=...)": its DUSt3R sizes are not in it; use the weights' shapes.
    return load_dust3r_state(state, model_string if model_string and "enc_embed_dim" in model_string else None, net)


# --- our format: safetensors + JSON ------------------------------------------------------------------------------

def _paths(dir_or_path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(dir_or_path)
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    return p / WEIGHTS_NAME, p / CONFIG_NAME


def save_model(dir_or_path: str | os.PathLike, module: nn.Module, config=None,
               dtype: torch.dtype | None = None) -> Path:
    """Write `model.safetensors` + `config.json` into a directory (or `x.safetensors` + `x.json`).

    Tied tensors are stored once (under their first name); `load_strict` restores the other names. `dtype`
    (e.g. torch.float16) casts the floating-point tensors; a value it cannot hold raises OpenLSMError."""
    from safetensors.torch import save_file

    weights_path, config_path = _paths(dir_or_path)
    aliases = {n for names in tied_keys(module).values() for n in names[1:]}
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items() if k not in aliases}
    if dtype is not None:
        tensors = {k: _cast(k, v, dtype) for k, v in tensors.items()}
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    meta = {"format": "openlsm", "version": 1, "module": type(module).__name__, "config": cfg}
    if dtype is not None:
        meta["dtype"] = str(dtype).removeprefix("torch.")
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(config_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return weights_path


def _cast(name: str, tensor: Tensor, dtype: torch.dtype) -> Tensor:
    if not tensor.is_floating_point():
        return tensor
    out = tensor.to(dtype)
    if not torch.isfinite(out).all() and torch.isfinite(tensor).all():
        raise OpenLSMError(f"cannot store {name} as {dtype}: its values overflow (max |x| = "
                           f"{tensor.abs().max().item():.3g})")
    return out


def load_state(dir_or_path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """(state dict, metadata {"module", "config", ...}) of a `save_model` output."""
    from safetensors.torch import load_file

    weights_path, config_path = _paths(dir_or_path)
    for p in (weights_path, config_path):
        if not p.is_file():
            raise OpenLSMError(f"model file not found: {p}")
    try:
        meta = json.loads(config_path.read_text())
        state = load_file(str(weights_path))
    except Exception as e:  # malformed JSON or safetensors header
        raise OpenLSMError(f"cannot read model {weights_path.parent}: {e}") from e
    return state, meta


def load_model(dir_or_path: str | os.PathLike, build: Callable[[dict], nn.Module]) -> nn.Module:
    """Build a module from the stored config with `build(config_dict)` and load the weights strictly."""
    state, meta = load_state(dir_or_path)
    module = build(meta.get("config", {}))
    load_strict(module, state, what=f"model {dir_or_path}")
    return module


def load_geometry_net(dir_or_path: str | os.PathLike):
    from openlsm.models.lsm.geometry import GeometryConfig, GeometryNet

    return load_model(dir_or_path, lambda cfg: GeometryNet(GeometryConfig.from_dict(cfg)))
