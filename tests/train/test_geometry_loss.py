"""The geometry-only training phase (`--loss geometry`): model.dust3r alone under the confidence regression."""

import dataclasses
import json
import math
import multiprocessing as mp
import os
import socket

import pytest
import torch

from openlsm.data.synthrooms.dataset import SynthRooms
from openlsm.errors import OpenLSMError
from openlsm.eval.metrics import depth_metrics
from openlsm.models.lsm import LSM, LSMConfig
from openlsm.train.checkpoint import load_checkpoint
from openlsm.train.data import mix_seed
from openlsm.train.losses import LossWeights, confidence_regression_loss
from openlsm.train.step import compute_losses, depth_absrel
from openlsm.train.trainer import TrainConfig, train

SKIPPED = ("l1", "dssim", "feature", "psnr_target", "coverage")  # need rendering: NaN on the geometry path


def gt_points_float64(batch: dict) -> torch.Tensor:
    """Brute force: pixel centres through K^-1 at their depth, then view v's camera into view 0's: [B, 2, H, W, 3]."""
    depths, Ks, c2w = batch["depths"][:, :2].double(), batch["Ks"][:, :2].double(), batch["c2w"][:, :2].double()
    B, V, H, W = depths.shape
    out = torch.zeros(B, V, H, W, 3, dtype=torch.float64)
    v_, u_ = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    pix = torch.stack([u_, v_, torch.ones_like(u_)], -1)  # [H, W, 3]
    for b in range(B):
        to_first = torch.linalg.inv(c2w[b, 0])
        for v in range(V):
            cam = (pix @ torch.linalg.inv(Ks[b, v]).T) * depths[b, v, ..., None]  # [H, W, 3] camera frame
            rel = to_first @ c2w[b, v]
            out[b, v] = cam @ rel[:3, :3].T + rel[:3, 3]
    return out


@pytest.fixture
def batch32():
    return SynthRooms("train", 32, views=3, length=2).sample_batch([0, 1])


def test_geometry_loss_is_the_regression_of_dust3r_alone(batch32, monkeypatch):
    torch.manual_seed(0)
    model = LSM(LSMConfig.tiny())
    w = LossWeights.preset("geometry")
    assert (w.l1, w.ssim, w.feature, w.conf) == (0.0, 0.0, 0.0, LossWeights.paper().conf) and w.geometry_only
    assert not LossWeights.paper().geometry_only and not LossWeights.official_code().geometry_only
    _, full = compute_losses(model, batch32, LossWeights.paper())  # the full path, before anything is blocked

    def boom(*args, **kwargs):
        raise AssertionError("the geometry path must not run this")

    monkeypatch.setattr("openlsm.train.step.render", boom)
    for part in (model.point_transformer, model.gaussian_head, model.lseg_feature_extractor, model.feature_expansion,
                 model.feature_reduction):
        part.register_forward_pre_hook(boom)
    total, sc = compute_losses(model, batch32, w)

    images = batch32["images"]
    geo = model.dust3r(images[:, 0] * 2 - 1, images[:, 1] * 2 - 1)
    valid = batch32["valid"][:, :2].bool() & (batch32["depths"][:, :2] > 0)
    conf, regr = confidence_regression_loss(torch.stack([geo.pts3d_1, geo.pts3d_2], 1),
                                            torch.stack([geo.conf_1, geo.conf_2], 1),
                                            gt_points_float64(batch32).float(), valid, w.conf_alpha)
    assert torch.allclose(sc["conf"], conf.detach(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(sc["regr"], regr.detach(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(total.detach(), w.conf * conf.detach(), rtol=1e-6, atol=1e-6)
    # the same keys as the full path, whose geometry terms are the same numbers
    assert sc.keys() == full.keys()
    for k in ("conf", "regr", "absrel", "scale"):
        assert torch.allclose(sc[k], full[k], rtol=1e-5, atol=1e-6), k
    assert all(math.isnan(sc[k].item()) for k in SKIPPED)
    assert all(math.isfinite(sc[k].item()) for k in sc if k not in SKIPPED)

    total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if not n.startswith("dust3r."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("dust3r.dust3r.enc_"))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".downstream_head2." in n)


def test_depth_absrel_matches_the_eval_metric():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(5, 7, 9, generator=g, dtype=torch.float64) * 4 + 0.5
    pred = gt * 3 * torch.exp(0.2 * torch.randn(5, 7, 9, generator=g, dtype=torch.float64))
    pred[0, 0, :4] = -1.0  # excluded: non-positive prediction
    pred[1, 2, 3] = math.inf  # excluded: not finite
    valid = torch.rand(5, 7, 9, generator=g) > 0.3
    valid[3] = False  # no pixel: nan
    valid[4] = False
    valid[4, 1, :5] = True  # odd count; image 2 below gets an even one
    valid[2] = False
    valid[2, 0, :6] = True
    got = depth_absrel(pred.float(), gt.float(), valid)
    want = depth_metrics(pred, gt, valid)["abs_rel"]
    assert torch.isnan(got[3]) and torch.isnan(want[3])
    keep = [0, 1, 2, 4]
    assert torch.allclose(got[keep].double(), want[keep], rtol=1e-5, atol=1e-7)
    assert torch.allclose(depth_absrel(7 * pred.float(), gt.float(), valid)[keep], got[keep], rtol=1e-5)
    assert depth_absrel(2.5 * gt.float(), gt.float(), valid)[keep].abs().max() < 1e-6  # exact up to scale


def tiny_config(out, **kw) -> TrainConfig:
    base = TrainConfig(model="tiny", resolution=32, views=2, train_size=1, resample_cameras=False, cache_data=True,
                       val_size=1, steps=8, batch_size=1, lr=2e-3, warmup_steps=2, log_every=1, val_every=0,
                       ckpt_every=0, out=out, device="cpu", quiet=True, loss="geometry")
    return dataclasses.replace(base, **kw)


def records(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_trainer_geometry_phase_then_paper_with_init(tmp_path):
    out = tmp_path / "geo"
    summary = train(tiny_config(out))
    assert summary["stopped"] == "done" and summary["step"] == 8
    recs = [r for r in records(out) if r["split"] == "train"]
    assert all(math.isfinite(r[k]) for r in recs for k in ("loss", "conf", "regr", "absrel", "grad_norm"))
    assert all(math.isnan(r[k]) for r in recs for k in SKIPPED)
    assert sum(r["regr"] for r in recs[-3:]) < 0.9 * sum(r["regr"] for r in recs[:3])
    val = [r for r in records(out) if r["split"] == "val"]
    assert len(val) == 1 and math.isfinite(val[0]["regr"]) and math.isfinite(val[0]["absrel"])

    torch.manual_seed(mix_seed(0, 0x1417))  # the trainer's initialisation
    init = LSM(LSMConfig.tiny()).state_dict()
    saved = load_checkpoint(out / "checkpoint.pt")
    rest = [k for k in init if not k.startswith("dust3r.") and init[k].is_floating_point()]
    assert rest and all(torch.equal(init[k], saved["model"][k]) for k in rest)  # frozen: not even weight decay
    assert not torch.equal(init["dust3r.dust3r.enc_norm.weight"], saved["model"]["dust3r.dust3r.enc_norm.weight"])
    n_dust3r = sum(n.startswith("dust3r.") for n, _ in LSM(LSMConfig.tiny()).named_parameters())
    assert sum(len(g["params"]) for g in saved["optimizer"]["param_groups"]) == n_dust3r  # AdamW holds dust3r only

    with pytest.raises(OpenLSMError, match="loss.*--init"):  # another loss is a new run, not a resume
        train(tiny_config(out, loss="paper", resume=True))
    with pytest.raises(OpenLSMError, match="nothing to train"):
        train(tiny_config(tmp_path / "frozen", freeze=("geometry",)))
    s = train(tiny_config(tmp_path / "paper", loss="paper", init=out / "model", steps=1, val_size=0))
    assert s["step"] == 1 and math.isfinite(s["train"]["l1"]) and math.isfinite(s["train"]["psnr_target"])


def test_cli_accepts_loss_geometry_with_freeze(tmp_path):
    import tyro

    from openlsm.cli.train import Train

    args = ["--config", "tiny", "--resolution", "32", "--views", "2", "--train-size", "1", "--val-size", "0",
            "--steps", "1", "--batch-size", "1", "--out", str(tmp_path / "cli"), "--device", "cpu", "--quiet",
            "--loss", "geometry", "--freeze", "geometry_encoder"]
    assert tyro.cli(Train, args=args).run() == 0
    saved = load_checkpoint(tmp_path / "cli" / "checkpoint.pt")
    assert saved["train_config"]["loss"] == "geometry"
    torch.manual_seed(mix_seed(0, 0x1417))
    init = LSM(LSMConfig.tiny()).state_dict()
    enc = [k for k in init if k.startswith("dust3r.dust3r.enc_blocks.")]
    assert enc and all(torch.equal(init[k], saved["model"][k]) for k in enc)  # --freeze still applies
    assert not torch.equal(init["dust3r.dust3r.enc_norm.weight"], saved["model"]["dust3r.dust3r.enc_norm.weight"])


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(tiny_config(out, steps=1, batch_size=2, train_size=2, val_size=0, warmup_steps=1, grad_clip=0.0))


def test_two_process_gloo_geometry_step_matches_single_process(tmp_path):
    """DDP (find_unused_parameters) with the frozen non-geometry parts: the same update as one process
    accumulating the two micro-batches (see test_trainer_ddp.py for why this is exact)."""
    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=ddp_worker, args=(r, 2, port, str(tmp_path / "ddp"))) for r in range(2)]
    for p in procs:
        p.start()
    train(tiny_config(tmp_path / "single", steps=1, batch_size=2, accum_steps=2, train_size=2, val_size=0,
                      warmup_steps=1, grad_clip=0.0))
    for p in procs:
        p.join(timeout=180)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    ddp, single = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("ddp", "single"))
    assert ddp["train_config"]["world_size"] == 2
    for k, v in single["model"].items():
        assert torch.equal(ddp["model"][k], v), k
    moments_d = [s["exp_avg"] for s in ddp["optimizer"]["state"].values()]
    moments_s = [s["exp_avg"] for s in single["optimizer"]["state"].values()]
    assert len(moments_d) == len(moments_s) > 0
    assert all(torch.equal(a, b) for a, b in zip(moments_d, moments_s))
    assert sum(int(b.abs().sum() > 0) for b in moments_s) > len(moments_s) // 2
