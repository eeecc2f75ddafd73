import dataclasses
import json
import os
import signal

import pytest
import torch
import yaml

from openlsm.errors import OpenLSMError
from openlsm.train.checkpoint import load_checkpoint, load_trained_model
from openlsm.train.trainer import TrainConfig, train


def tiny_config(out, **kw) -> TrainConfig:
    """tiny LSM on a fixed set of 2 SynthRooms rooms at 32x32, 2 views (cached, fixed cameras), CPU."""
    base = TrainConfig(model="tiny", resolution=32, views=2, train_size=2, resample_cameras=False, cache_data=True,
                       val_size=0, steps=4, batch_size=1, lr=2e-3, warmup_steps=2, log_every=1, val_every=0,
                       ckpt_every=0, out=out, device="cpu", quiet=True)
    return dataclasses.replace(base, **kw)


def records(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


class Crash(Exception):
    pass


def test_a_few_dozen_steps_lower_the_loss(tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(out, steps=12, train_size=1, val_size=1))
    assert summary["stopped"] == "done" and summary["step"] == 12
    train_recs = [r for r in records(out) if r["split"] == "train"]
    assert [r["step"] for r in train_recs] == list(range(1, 13))
    first = sum(r["loss"] for r in train_recs[:3]) / 3
    last = sum(r["loss"] for r in train_recs[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert train_recs[-1]["l1"] < train_recs[0]["l1"]
    val = [r for r in records(out) if r["split"] == "val"]
    assert len(val) == 1 and val[0]["step"] == 12 and summary["val"]["loss"] == pytest.approx(val[0]["loss"])
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["steps"] == 12 and saved["model"] == "tiny"
    final = load_checkpoint(out / "checkpoint.pt")["model"]
    for path in (out / "checkpoint.pt", out / "model"):  # model/ is an LSM.save folder, what evaluation loads
        state = load_trained_model(path).state_dict()
        assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in final)


@pytest.mark.parametrize("reuse", [1, 3])  # with 3 the resume lands inside a reused batch's group (step 2 of 0-2)
def test_kill_and_resume_is_bit_exact(tmp_path, reuse):
    straight = tmp_path / "straight"
    train(tiny_config(straight, ckpt_every=2, batch_reuse=reuse))

    def crash_at_3(step, scalars):
        if step == 3:
            raise Crash  # dies after step 3's update, before any checkpoint of it: the run restarts from step 2

    resumed = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(tiny_config(resumed, ckpt_every=2, batch_reuse=reuse), callback=crash_at_3)
    assert load_checkpoint(resumed / "checkpoint.pt")["step"] == 2
    assert [r["step"] for r in records(resumed)] == [1, 2, 3]
    summary = train(tiny_config(resumed, ckpt_every=2, batch_reuse=reuse, resume=True))
    assert summary["step"] == 4

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(resumed / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    # the log of the resumed run drops the crashed step 3 and equals the uninterrupted log
    ra, rb = records(straight), records(resumed)
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]


def test_batch_reuse_fetches_once_per_group_and_swaps_the_inputs(tmp_path, monkeypatch):
    """reuse 2: optimizer steps 2k and 2k+1 train on data step k's batch, the second time with views 0 and 1
    exchanged; the batches are those a reuse-1 run trains on at steps k."""
    from openlsm.train.data import SynthRoomsSource
    from openlsm.train.step import LossModule

    seen, fetched = [], []
    forward, fetch = LossModule.forward, SynthRoomsSource.fetch
    monkeypatch.setattr(LossModule, "forward",
                        lambda self, batch, gen=None: seen.append({k: v.clone() for k, v in batch.items()}) or
                        forward(self, batch, gen))
    monkeypatch.setattr(SynthRoomsSource, "fetch", lambda self, pairs: fetched.append(pairs) or fetch(self, pairs))
    kw = {"steps": 5, "views": 3, "train_size": 4, "cache_data": False, "resample_cameras": True}
    train(tiny_config(tmp_path / "plain", **kw))
    plain_batches, plain_fetches = seen[:], fetched[:]
    seen.clear(), fetched.clear()
    train(tiny_config(tmp_path / "reuse", **kw, batch_reuse=2))
    assert len(seen) == 5 and fetched == plain_fetches[:3]  # data steps 0, 1, 2 for optimizer steps 0..4
    for step, batch in enumerate(seen):
        source = plain_batches[step // 2]
        order = [1, 0, 2] if step % 2 else [0, 1, 2]
        assert batch.keys() == source.keys()
        for k in batch:
            assert torch.equal(batch[k], source[k][:, order]), (step, k)
    assert not torch.equal(seen[0]["c2w"], seen[1]["c2w"])  # the swap really changed the batch


def test_time_limit_and_signal_stop_cleanly_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    s = train(tiny_config(out, steps=10, max_minutes=1e-6))
    assert s["stopped"] == "time" and s["step"] == 1
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 1

    with pytest.raises(OpenLSMError, match="--resume"):  # never silently overwrite a run
        train(tiny_config(out, steps=10))
    with pytest.raises(OpenLSMError, match="batch_size"):  # resuming with other data/maths is refused
        train(tiny_config(out, steps=10, batch_size=2, resume=True))
    with pytest.raises(OpenLSMError, match="warmup_steps"):  # so is another learning-rate schedule
        train(tiny_config(out, steps=10, warmup_steps=7, resume=True))

    def terminate(step, scalars):
        os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    s = train(tiny_config(out, steps=10, resume=True), callback=terminate)
    assert s["stopped"] == "signal" and s["step"] == 2
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is handler  # handlers restored


def test_cli_flags_cover_the_train_config():
    from openlsm.cli.train import Train

    cli = {f.name for f in dataclasses.fields(Train)}
    cfg = {f.name for f in dataclasses.fields(TrainConfig)}
    assert cli - {"config"} == cfg - {"model"}
    c = Train(config="tiny", steps=3, freeze=("geometry_encoder",)).to_config()
    assert c.model == "tiny" and c.steps == 3 and c.freeze == ("geometry_encoder",)


def test_cli_parses_and_runs_one_step(tmp_path, capsys):
    import tyro

    from openlsm.cli.train import Train

    args = ["--config", "tiny", "--resolution", "32", "--views", "2", "--train-size", "1", "--val-size", "0",
            "--steps", "1", "--batch-size", "1", "--out", str(tmp_path / "cli"), "--device", "cpu", "--quiet",
            "--max-minutes", "5", "--freeze", "geometry_encoder"]
    cmd = tyro.cli(Train, args=args)
    assert cmd.run() == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1 and summary["stopped"] == "done"
    saved = load_checkpoint(tmp_path / "cli" / "checkpoint.pt")
    assert saved["train_config"]["freeze"] == ["geometry_encoder"]
    # the frozen encoder kept its initial weights; the rest moved
    from openlsm.models.lsm import LSM, LSMConfig
    from openlsm.train.data import mix_seed

    torch.manual_seed(mix_seed(0, 0x1417))  # the trainer's initialisation seed for seed 0
    init = LSM(LSMConfig.tiny()).state_dict()
    enc = [k for k in init if k.startswith("dust3r.dust3r.enc_blocks.")]
    assert enc and all(torch.equal(init[k], saved["model"][k]) for k in enc)
    assert not torch.equal(init["dust3r.dust3r.enc_norm.weight"], saved["model"]["dust3r.dust3r.enc_norm.weight"])
    assert not torch.equal(init["gaussian_head.gaussian_proj.weight"], saved["model"]["gaussian_head.gaussian_proj.weight"])


def test_data_workers_change_no_value_and_end_with_the_run(tmp_path):
    """Rooms built in a worker process give the same run as rooms built in the trainer (loss by loss), and the
    worker is gone once train() returns."""
    import multiprocessing

    runs = {}
    for workers in (0, 1):
        out = tmp_path / f"w{workers}"
        train(tiny_config(out, steps=2, cache_data=False, resample_cameras=True, data_workers=workers))
        runs[workers] = [r["loss"] for r in records(out) if r["split"] == "train"]
    assert runs[0] == runs[1] and len(runs[0]) == 2
    assert not multiprocessing.active_children()
