"""SynthRooms dataset API, determinism, disk layout round trip and the `openlsm synth` command."""

import itertools
import json

import numpy as np
import pytest
import torch
import yaml

from openlsm.cli.synth import Synth
from openlsm.data.synthrooms import CLASSES, SPLITS, SynthRooms, read_scene, write_frames, write_labels_json
from openlsm.data.synthrooms.disk import read_labels
from openlsm.errors import OpenLSMError


@pytest.fixture(scope="module")
def sample():
    return SynthRooms("val", resolution=(24, 32), views=3)[0]


def test_sample_shapes_and_values(sample):
    V, H, W = 3, 24, 32
    shapes = {"images": (V, 3, H, W), "depths": (V, H, W), "valid": (V, H, W), "Ks": (V, 3, 3), "c2w": (V, 4, 4),
              "labels": (V, H, W), "instances": (V, H, W), "normals": (V, 3, H, W)}
    for k, shp in shapes.items():
        assert tuple(sample[k].shape) == shp, k
        assert torch.isfinite(sample[k].float()).all(), k
    assert sample["labels"].dtype == torch.int64 and sample["instances"].dtype == torch.int64
    assert sample["valid"].dtype == torch.bool and sample["valid"].all()  # closed rooms: every ray hits
    assert 0 <= float(sample["images"].min()) and float(sample["images"].max()) <= 1
    assert (sample["depths"] > 0).all() and float(sample["depths"].max()) < 12
    assert (sample["labels"] > 0).all() and int(sample["labels"].max()) < len(CLASSES)
    assert torch.allclose(sample["normals"].norm(dim=1), torch.ones(V, H, W), atol=1e-4)
    R = sample["c2w"][:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(V, 3, 3), atol=1e-5)
    assert int(sample["scene_seed"]) == SPLITS["val"][0]


def test_same_seed_same_bytes(sample):
    again = SynthRooms("val", resolution=(24, 32), views=3)[0]
    for k, v in sample.items():
        assert torch.equal(v, again[k]), k
    other = SynthRooms("val", resolution=(24, 32), views=3)[1]
    assert not torch.equal(other["images"], sample["images"])


def test_splits_never_overlap_and_bad_input():
    ranges = sorted(SPLITS.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))
    with pytest.raises(OpenLSMError):
        SynthRooms("nope")
    with pytest.raises(OpenLSMError):
        SynthRooms("val", length=10**9)
    assert len(SynthRooms("test", length=5)) == 5


def test_disk_round_trip(sample, tmp_path):
    write_labels_json(tmp_path)
    assert read_labels(tmp_path) == CLASSES
    write_frames(tmp_path / "s", sample, start=0)
    back = read_scene(tmp_path / "s")
    assert torch.equal(back["labels"], sample["labels"]) and torch.equal(back["instances"], sample["instances"])
    assert (back["images"] - sample["images"]).abs().max() <= 0.5 / 255 + 1e-6
    assert (back["depths"] - sample["depths"]).abs().max() <= 0.5e-3 + 1e-6
    assert torch.allclose(back["Ks"], sample["Ks"]) and torch.allclose(back["c2w"], sample["c2w"])


def test_cli_writes_dataset_and_refuses_existing(tmp_path):
    out = tmp_path / "synth"
    cmd = Synth(out=out, scenes=1, split="test", height=16, width=24, supersample=1, preview=True)
    assert cmd.run() == 0
    scene = out / f"synth_{SPLITS['test'][0]:08d}"
    assert sorted(p.name for p in (scene / "color").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    for sub in ("depth", "label", "instance"):
        assert len(list((scene / sub).glob("*.png"))) == 3
    with np.load(scene / "0001.npz") as z:
        assert z["intrinsics"].shape == (3, 3) and z["c2w"].shape == (4, 4)
    assert json.loads((out / "labels.json").read_text())["1"] == "wall"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["config"]["height"] == 16 and cfg["command"]["split"] == "test"
    assert (out / "preview.png").exists()
    assert len(json.loads((scene / "samples.json").read_text())["samples"]) == 1
    with pytest.raises(OpenLSMError):
        Synth(out=out, scenes=1).run()
    assert Synth(out=out, scenes=1, split="test", height=16, width=24, supersample=1, overwrite=True).run() == 0
