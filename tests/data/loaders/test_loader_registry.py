"""`load_dataset` specs, layout detection, option parsing, and SynthRooms (on the fly and on disk)."""

import json

import pytest
import torch
from loader_fakes import assert_reprojects

from openlsm.data.loaders import LAYOUTS, SynthRoomsDisk, detect_layout, load_dataset, parse_spec
from openlsm.data.synthrooms import SynthRooms, write_frames, write_labels_json
from openlsm.errors import OpenLSMError


def test_parse_spec_and_values(tmp_path):
    assert parse_spec("synthrooms") == ("synthrooms", None, {})
    assert parse_spec("scannet:/data/x?val_scenes=2&use-mask=true&step=0.5&order=official-code") == (
        "scannet", "/data/x", {"val_scenes": 2, "use_mask": True, "step": 0.5, "order": "official-code"})
    with pytest.raises(OpenLSMError, match="not key=value"):
        parse_spec("scannet:/x?oops")
    with pytest.raises(OpenLSMError, match="unknown dataset"):
        parse_spec("imagenet:/x")
    with pytest.raises(OpenLSMError, match="unknown dataset"):
        parse_spec(str(tmp_path / "does-not-exist"))
    with pytest.raises(OpenLSMError, match="cannot tell the dataset layout"):
        detect_layout(tmp_path)
    assert set(LAYOUTS) >= {"synthrooms", "scannet", "scannet-test", "scannetpp", "replica", "folder", "rgbd"}


@pytest.fixture(scope="module")
def synth_disk(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ds = SynthRooms("val", resolution=(24, 32), views=3)
    sample = ds[0]
    originals = [sample, sample]  # the same views as two scenes (one room is enough; rooms are slow to make)
    write_labels_json(root)
    for k, s in enumerate(originals):
        frames = write_frames(root / f"synth_{k}", s)
        (root / f"synth_{k}" / "samples.json").write_text(json.dumps({"samples": [{"frames": frames}]}))
    return root, originals


def test_synthrooms_disk_round_trip(synth_disk):
    root, originals = synth_disk
    assert detect_layout(root) == "synthrooms-disk"
    ds = load_dataset(str(root), split="all")
    assert isinstance(ds, SynthRoomsDisk) and len(ds) == 2
    s, o = ds[1], originals[1]
    assert s["scene"] == "synth_1" and s["frames"] == ["0000", "0001", "0002"]
    assert torch.allclose(s["images"], o["images"], atol=1 / 255 + 1e-6)
    assert torch.equal(s["labels"], o["labels"]) and torch.equal(s["valid"], o["valid"])
    assert torch.allclose(s["depths"], o["depths"], atol=6e-4)  # millimetre PNG
    assert torch.allclose(s["Ks"], o["Ks"]) and torch.allclose(s["c2w"], o["c2w"], atol=1e-6)
    assert_reprojects(s, 0, 1, tol=0.02, frac=0.7, min_points=20)  # rooms have occlusions; most points agree
    train = load_dataset(f"synthrooms-disk:{root}?val_scenes=1", split="train")
    assert [sc.name for sc in train.scenes] == ["synth_0"]


def test_load_dataset_dispatch_and_errors(synth_disk, tmp_path):
    root, _ = synth_disk
    on_the_fly = load_dataset("synthrooms?length=3", split="val", resolution=(16, 24), views=2)
    assert isinstance(on_the_fly, SynthRooms) and len(on_the_fly) == 3
    assert on_the_fly[0]["images"].shape == (2, 3, 16, 24)
    both = load_dataset([f"synthrooms-disk:{root}", f"synthrooms-disk:{root}"], split="all", resolution=16)
    assert len(both) == 4 and both[3]["images"].shape == (3, 3, 16, 16)
    with pytest.raises(OpenLSMError, match=r"does not take option\(s\) \['max_frames'\]"):
        load_dataset(f"synthrooms-disk:{root}?max_frames=3")
    with pytest.raises(OpenLSMError, match="needs a path"):
        load_dataset("scannet")
    with pytest.raises(OpenLSMError, match="missing folder"):
        load_dataset(f"scannet:{tmp_path / 'nowhere'}")
    with pytest.raises(OpenLSMError, match="scannetv2-labels"):
        load_dataset(f"scannet-test:{tmp_path}", split="test")
    with pytest.raises(OpenLSMError, match="views"):
        load_dataset(f"synthrooms-disk:{root}", split="all", views=1)
