"""`openlsm eval` end to end with random `tiny` weights on two SynthRooms test scenes, plus the loaders and queries."""

import json
import math
from pathlib import Path

import pytest
import torch

from openlsm.cli.eval import Eval
from openlsm.data.synthrooms import CLASSES, SynthRooms
from openlsm.errors import OpenLSMError
from openlsm.eval.harness import parse_baselines
from openlsm.eval.loading import load_eval_model, open_dataset
from openlsm.eval.queries import random_embeddings, synonym_sets, text_space

NAMES = [c for c in CLASSES if c != "void"]
LIVINGROOM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rgbd_livingroom"


def _strict(text):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    cmd = Eval(preset="tiny", data="synthrooms:test", scenes=2, out=out, resolution=32, baselines="a,b,c",
               gs_steps=2, render_repeats=1, device="cpu", backend="torch")
    assert cmd.run() == 0
    return out, _strict((out / "metrics.json").read_text())


def test_metrics_json_structure(run):
    _, m = run
    assert m["format"] == "openlsm-eval" and m["device"].startswith("cpu")
    assert {"python", "torch", "openlsm"} <= set(m["versions"]) and "git" in m
    assert m["config"]["preset"] == "tiny" and m["config"]["scenes"] == 2 and m["config"]["resolution"] == 32
    assert m["class_names"] == NAMES
    assert m["text_encoder"] == {"name": "random", "dim": 16, "meaningful": False}
    assert m["lpips"]["available"] is False and "never approximated" in m["lpips"]["reason"]
    assert len(m["scenes"]) == 2 and [s["index"] for s in m["scenes"]] == [0, 1]
    assert m["scenes"][0]["scene"] == "seed 10010000"  # SynthRooms test scene 0
    assert set(m["summary"]) == {"lsm", "3dgs", "2d", "sfm"}
    assert isinstance(m["nonfinite"], dict)


def test_lsm_scores_are_finite_and_in_range(run):
    _, m = run
    for scene in m["scenes"]:
        r = scene["lsm"]
        for key in ("src_miou", "src_acc", "own_miou", "tgt_miou", "tgt_acc", "inlier", "ssim"):
            assert r[key] is not None and -1 <= r[key] <= 1, key
        assert 0 <= r["src_miou"] <= 1 and 0 <= r["inlier"] <= 1
        assert r["abs_rel"] >= 0 and math.isfinite(r["psnr"]) and r["recon_s"] > 0 and r["render_fps"] > 0
        assert 0 <= r["pose_rot_deg"] <= 180 and 0 <= r["pose_trans_deg"] <= 180
        for j in range(2):
            assert 0 <= r[f"held{j}_src_miou"] <= 1
    s = m["summary"]["lsm"]["psnr"]
    vals = [sc["lsm"]["psnr"] for sc in m["scenes"]]
    assert s["n"] == 2 and s["mean"] == pytest.approx(sum(vals) / 2)
    assert s["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2)


def test_pooled_segmentation_counts_every_labelled_pixel(run):
    _, m = run
    ds = SynthRooms("test", 32, views=3, length=2)
    labelled = [(ds[i]["labels"] > 0) for i in range(2)]  # void (0) is ignored
    src = sum(int(lab[:2].sum()) for lab in labelled)
    tgt = sum(int(lab[2:].sum()) for lab in labelled)
    assert m["pooled"]["lsm"]["own"]["pixels"] == src  # the inputs read from their own Gaussians
    for method in ("lsm", "3dgs", "2d"):
        assert m["pooled"][method]["src"]["pixels"] == src
        assert m["pooled"][method]["tgt"]["pixels"] == tgt
        assert set(m["pooled"][method]["src"]["iou"]) == set(NAMES)
    held = m["held_out"]
    assert len(held) == 2 and held[0]["names"][NAMES.index("sofa")] == "couch"
    assert held[1]["names"][NAMES.index("tv")] == "television set"
    assert held[0]["src"]["pixels"] == src


def test_baseline_records(run):
    _, m = run
    for scene in m["scenes"]:
        gs = scene["3dgs"]
        assert gs["steps"] == 2 and gs["time_s"] > 0 and math.isfinite(gs["psnr"]) and 0 <= gs["src_miou"] <= 1
        assert 0 <= scene["2d"]["tgt_miou"] <= 1
        assert scene["sfm"]["status"] in ("ok", "unavailable") or scene["sfm"]["status"].startswith("failed")


def test_cli_flags_parse():
    import tyro

    cmd = tyro.extras.subcommand_cli_from_dict({"eval": Eval}, args=[
        "eval", "--preset", "tiny", "--scenes", "3", "--baselines", "a,c", "--class-names", "wall", "floor",
        "--out", "x", "--no-pose", "--feature-fit", "4"])
    assert cmd.preset == "tiny" and cmd.scenes == 3 and parse_baselines(cmd.baselines) == ("3dgs", "2d")
    assert cmd.class_names == ("wall", "floor") and cmd.pose is False and cmd.out == Path("x")
    assert cmd.feature_fit == 4


def test_existing_output_is_refused(run):
    out, _ = run
    with pytest.raises(OpenLSMError, match="exists"):
        Eval(preset="tiny", scenes=1, out=out, resolution=32).run()


def test_bad_inputs_are_user_errors():
    with pytest.raises(OpenLSMError):
        parse_baselines("a,z")
    assert parse_baselines("c, a,3dgs") == ("2d", "3dgs")
    with pytest.raises(OpenLSMError, match="unknown dataset"):
        open_dataset("nonsense:test", 32, 3, 1)
    with pytest.raises(OpenLSMError, match="3 views"):
        open_dataset("synthrooms:test", 32, 2, 1)
    with pytest.raises(OpenLSMError, match="checkpoint"):
        load_eval_model(None, None, torch.device("cpu"))
    with pytest.raises(OpenLSMError, match="feature_fit_iters >= 0"):
        Eval(preset="tiny", scenes=1, resolution=32, feature_fit=-1, out=Path("/nonexistent/never-written")).run()


def test_checkpoint_round_trip(tmp_path):
    model, _ = load_eval_model(None, "tiny", torch.device("cpu"), seed=3)
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pth")
    loaded, info = load_eval_model(tmp_path / "ckpt.pth", "tiny", torch.device("cpu"))
    other, _ = load_eval_model(None, "tiny", torch.device("cpu"), seed=4)
    sd, ld, od = model.state_dict(), loaded.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], ld[k]) for k in sd) and "ckpt.pth" in info["source"]
    assert not all(torch.equal(sd[k], od[k]) for k in sd)  # the seed matters, so the check above means something


def test_trainer_checkpoint_without_preset(tmp_path):
    ckpt = pytest.importorskip("openlsm.train.checkpoint")
    model, _ = load_eval_model(None, "tiny", torch.device("cpu"), seed=5)
    ckpt.save_checkpoint(tmp_path / "step.pt", {"model": model.state_dict(), "train_config": {"model": "tiny"}})
    loaded, _ = load_eval_model(tmp_path / "step.pt", None, torch.device("cpu"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_queries():
    sets = synonym_sets(["wall", "tv", "unknownthing"])
    assert sets == [["partition", "screen", "unknownthing"], ["room divider wall", "television set", "unknownthing"]]
    a, b = random_embeddings(["x", "y"], 16), random_embeddings(["y"], 16)
    assert torch.equal(a[1], b[0]) and torch.allclose(a.norm(dim=-1), torch.ones(2))
    model, _ = load_eval_model(None, "tiny", torch.device("cpu"))
    assert text_space(model, "auto").name == "random"
    with pytest.raises(OpenLSMError, match="384"):
        text_space(model, "minilm")


@pytest.mark.skipif(not LIVINGROOM.is_dir(), reason="shared rgbd_livingroom frames not present")
def test_real_frames_without_labels():
    """A loader spec of real RGB-D frames (no semantic labels): geometry and image metrics only."""
    from openlsm.eval.harness import EvalConfig, evaluate

    m = evaluate(EvalConfig(preset="tiny", data=f"rgbd:{LIVINGROOM}", scenes=1, resolution=32, baselines=("2d",),
                            render_repeats=1, device="cpu", backend="torch", warmup=False), log=lambda msg: None)
    rec = m["scenes"][0]["lsm"]
    assert m["scenes"][0]["scene"] == "rgbd_livingroom" and m["text_encoder"] is None
    assert "src_miou" not in rec and rec["abs_rel"] >= 0 and 0 <= rec["inlier"] <= 1 and rec["psnr"] > 0
    assert m["baselines"]["2d"] == "not run" and m["pooled"] == {}


def test_table_shows_small_rates_and_pooled_scores(run):
    import copy

    from openlsm.eval.harness import ROWS, table_cells

    result = copy.deepcopy(run[1])
    labels = [r[0] for r in ROWS]
    for fps, shown in ((0.1751, "0.18 ± 0.04"), (654.4, "654 ± 0")):  # a CPU's rate must not print as "0"
        result["summary"]["lsm"]["render_fps"] = {"mean": fps, "std": 0.045, "n": 2}
        assert dict(zip(labels, table_cells(result)["lsm"]))["render FPS"] == shown
    row = dict(zip(labels, table_cells(result)["lsm"]))
    assert row["src mIoU"] == f"{result['pooled']['lsm']['src']['miou']:.3f}"  # segmentation: pooled pixels
