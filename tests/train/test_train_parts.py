import math

import pytest
import torch
from torch import nn

from openlsm.errors import OpenLSMError
from openlsm.models.lsm import LSM, LSMConfig
from openlsm.train.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from openlsm.train.data import global_batch
from openlsm.train.optim import freeze, lr_at, param_groups, set_train_mode


def test_global_batch_is_a_function_of_seed_and_step_and_covers_each_pass():
    n, bs = 7, 3
    stream = [p for step in range(7) for p in global_batch(5, step, bs, n)]  # 21 samples = 3 passes
    for e in range(3):
        assert sorted(i for i, ep in stream[e * n:(e + 1) * n]) == list(range(n))  # each pass: every room once
        assert all(ep == e for _, ep in stream[e * n:(e + 1) * n])
    assert global_batch(5, 4, bs, n) == stream[12:15]  # recomputed from (seed, step) alone
    assert [i for i, _ in stream[:n]] != [i for i, _ in stream[n:2 * n]]  # passes are reshuffled
    assert [i for i, _ in global_batch(6, 0, n, n)] != [i for i, _ in stream[:n]]  # seed matters


def test_param_groups_exclude_biases_norms_embeddings():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)
            self.norm = nn.LayerNorm(4)
            self.emb = nn.Embedding(5, 4)
            self.pos_embed = nn.Parameter(torch.zeros(1, 2, 4))
            self.frozen = nn.Linear(2, 2)
            self.frozen.requires_grad_(False)

    m = M()
    decay, no_decay = param_groups(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    def ids(ps):
        return {id(p) for p in ps}

    assert ids(decay["params"]) == {id(m.lin.weight)}
    assert ids(no_decay["params"]) == {id(m.lin.bias), id(m.norm.weight), id(m.norm.bias), id(m.emb.weight),
                                       id(m.pos_embed)}


def test_freeze_geometry_encoder_matches_dust3r_set_freeze():
    model = LSM(LSMConfig.tiny())
    n = freeze(model, ("geometry_encoder",))
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    geo = {k for k in frozen if k.startswith("dust3r.")}
    assert geo and all(k.split(".")[2] in ("mask_token", "patch_embed", "enc_blocks") for k in geo)
    assert "dust3r.dust3r.enc_norm.weight" not in frozen
    assert n == sum(p.numel() for k, p in model.named_parameters() if k in geo)
    with pytest.raises(OpenLSMError):
        freeze(model, ("no_such_part",))


def test_set_train_mode_keeps_frozen_batchnorm_in_eval():
    model = LSM(LSMConfig.tiny())
    freeze(model, ("point_transformer",))
    set_train_mode(model)
    bns = [m for m in model.point_transformer.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and not any(m.training for m in bns)
    assert model.gaussian_head.training


def test_lr_schedule():
    kw = {"lr": 1e-3, "min_lr": 1e-5, "warmup": 4, "total": 20}
    assert lr_at(0, **kw) == pytest.approx(2.5e-4) and lr_at(3, **kw) == pytest.approx(1e-3)
    assert lr_at(4, **kw) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(12, **kw) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(20, **kw) == pytest.approx(1e-5) and lr_at(25, **kw) == pytest.approx(1e-5)
    assert lr_at(12, cosine=False, **kw) == pytest.approx(1e-3)


def test_checkpoint_round_trip_with_rng_states(tmp_path):
    import random

    import numpy as np

    states = rng_states()
    path = save_checkpoint(tmp_path / "c.pt", {"step": 3, "rng": [states]})
    draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_states(load_checkpoint(path)["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == draws
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(OpenLSMError):
        load_checkpoint(tmp_path / "bad.pt")


def test_semantic_weights_init_and_weight_export(tmp_path):
    import dataclasses

    from openlsm.models.semantics.small_extractor import (
        SmallExtractor,
        SmallExtractorConfig,
        save_small_extractor,
    )
    from openlsm.train.checkpoint import export_weights, load_trained_model
    from openlsm.train.distributed import DistContext
    from openlsm.train.trainer import TrainConfig, build_model, plain

    torch.manual_seed(123)
    ext = SmallExtractor(LSMConfig.tiny().small_extractor)
    save_small_extractor(ext, tmp_path / "ext.safetensors")
    cfg = TrainConfig(model="tiny", semantic_weights=tmp_path / "ext.safetensors", device="cpu")
    model = build_model(cfg, DistContext(), fresh=True)
    loaded = model.lseg_feature_extractor.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in ext.state_dict().items())

    save_small_extractor(SmallExtractor(SmallExtractorConfig(widths=(8, 16, 16, 16), feature_dim=32, groups=4)),
                         tmp_path / "other.safetensors")
    with pytest.raises(OpenLSMError, match="do not fit"):
        build_model(dataclasses.replace(cfg, semantic_weights=tmp_path / "other.safetensors"), DistContext(), True)

    files = export_weights(model.state_dict(), tmp_path / "w", plain(cfg), step=7, shard_mb=1.0)
    assert len(files) >= 2 and all(f.stat().st_size < 1.2 * 2**20 for f in files)
    expected = {k: v.to(torch.bfloat16).float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for again in (build_model(dataclasses.replace(cfg, semantic_weights=None, init=tmp_path / "w"), DistContext(), True),
                  load_trained_model(tmp_path / "w")):
        state = again.state_dict()
        assert state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())

    model.save(tmp_path / "saved")  # an LSM.save folder initialises exactly (fp32)
    again = build_model(dataclasses.replace(cfg, semantic_weights=None, init=tmp_path / "saved"), DistContext(), True)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    # --init plus --semantic-weights: everything from init except the extractor, which the weights file replaces
    torch.manual_seed(7)
    ext2 = SmallExtractor(LSMConfig.tiny().small_extractor)
    save_small_extractor(ext2, tmp_path / "ext2.safetensors")
    swapped = build_model(dataclasses.replace(cfg, semantic_weights=tmp_path / "ext2.safetensors",
                                              init=tmp_path / "saved"), DistContext(), True).state_dict()
    prefix = "lseg_feature_extractor."
    assert all(torch.equal(swapped[prefix + k], v) for k, v in ext2.state_dict().items())
    assert all(torch.equal(swapped[k], v) for k, v in model.state_dict().items() if not k.startswith(prefix))
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("gaussian_head.")}
    export_weights(partial, tmp_path / "partial", plain(cfg), step=1)
    with pytest.raises(OpenLSMError, match="does not fit"):
        build_model(dataclasses.replace(cfg, semantic_weights=None, init=tmp_path / "partial"), DistContext(), True)


def test_prefetcher_returns_the_scheduled_batch_or_fetches():
    import threading

    from openlsm.train.data import Prefetcher

    class Source:
        def __init__(self):
            self.threads = []

        def fetch(self, pairs):
            self.threads.append(threading.current_thread().name)
            return {"idx": torch.tensor([i for i, _ in pairs])}

    src = Source()
    pre = Prefetcher(src, enabled=True)
    assert pre.get(0, [(3, 0)])["idx"].tolist() == [3]  # nothing scheduled: fetched here
    pre.schedule(1, [(5, 0), (6, 0)])
    assert pre.get(1, [(5, 0), (6, 0)])["idx"].tolist() == [5, 6]
    pre.schedule(2, [(1, 0)])
    assert pre.get(7, [(2, 0)])["idx"].tolist() == [2]  # another step than scheduled: fetched afresh
    pre.close()
    assert src.threads[0] == threading.current_thread().name and src.threads[1].startswith("openlsm-data")


def test_training_on_a_dataset_spec_reads_the_loader(tmp_path):
    """--data takes any load_dataset spec: here SynthRooms written to disk (the ScanNet-style loader path)."""
    import json

    from openlsm.data.loaders import load_dataset
    from openlsm.data.synthrooms import SynthRooms, write_frames, write_labels_json
    from openlsm.train.data import DatasetSource, make_source
    from openlsm.train.trainer import TrainConfig, train

    root = tmp_path / "disk"
    write_labels_json(root)
    for k in range(2):
        frames = write_frames(root / f"synth_{k}", SynthRooms("val", resolution=32, views=3)[k])
        (root / f"synth_{k}" / "samples.json").write_text(json.dumps({"samples": [{"frames": frames}]}))
    spec = f"synthrooms-disk:{root}?val_scenes=1"
    src = make_source(spec, "train", 32, 3, None, "cpu")
    assert isinstance(src, DatasetSource) and len(src) == 1
    batch = src.fetch([(0, 0), (0, 1)])
    item = load_dataset(spec, split="train", resolution=32, views=3)[0]
    assert set(batch) == {"images", "depths", "valid", "Ks", "c2w", "labels"}
    assert batch["images"].shape == (2, 3, 3, 32, 32) and torch.equal(batch["images"][1], item["images"])
    assert torch.equal(batch["c2w"][0], item["c2w"]) and torch.equal(batch["labels"][0], item["labels"])

    summary = train(TrainConfig(model="tiny", data=spec, resolution=32, views=3, steps=2, batch_size=1, val_size=1,
                                warmup_steps=1, log_every=1, val_every=0, ckpt_every=0, out=tmp_path / "run",
                                device="cpu", quiet=True))
    assert summary["step"] == 2 and math.isfinite(summary["train"]["loss"]) and "loss" in summary["val"]


def test_init_from_a_dust3r_checkpoint_sets_only_the_geometry_network(tmp_path):
    import argparse

    from openlsm.train.distributed import DistContext
    from openlsm.train.trainer import TrainConfig, build_model

    torch.manual_seed(5)
    donor = LSM(LSMConfig.tiny()).dust3r.dust3r  # a GeometryNet standing in for naver's DUSt3R
    path = tmp_path / "dust3r.pth"
    torch.save({"model": donor.state_dict(), "args": argparse.Namespace(model="AsymmetricCroCo3DStereo()")}, path)
    cfg = TrainConfig(model="tiny", init=path, device="cpu")
    model = build_model(cfg, DistContext(), fresh=True)
    fresh = build_model(TrainConfig(model="tiny", device="cpu"), DistContext(), fresh=True)
    got, donor_sd, fresh_sd = model.state_dict(), donor.state_dict(), fresh.state_dict()
    assert all(torch.equal(got["dust3r.dust3r." + k], v) for k, v in donor_sd.items())
    rest = [k for k in got if not k.startswith("dust3r.")]
    assert rest and all(torch.equal(got[k], fresh_sd[k]) for k in rest)  # everything else: the seeded init
    assert any(not torch.equal(got[k], fresh_sd[k]) for k in got if k.startswith("dust3r."))  # it did change
