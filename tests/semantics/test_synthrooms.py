"""The small extractor and the train-semantics CLI on the real SynthRooms data (tiny sizes)."""

import json

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.semantics import (
    SmallTrainConfig,
    drop_classes,
    label_embeddings,
    load_small_extractor,
    remap_labels,
    train_small_extractor,
)

synth = pytest.importorskip("openlsm.cli.train_semantics").load_synthrooms


def test_small_extractor_fits_synthrooms(minilm):
    try:
        SynthRooms, names = synth()
    except OpenLSMError as e:  # the data package is being written in parallel
        pytest.skip(f"synthrooms unavailable: {e}")
    ds = SynthRooms("train", 32, views=2, length=2)
    kept, lut = drop_classes(list(names))
    assert "void" not in kept and lut[0] == -1 and kept[int(lut[names.index("sofa")])] == "sofa"
    data = [ds[i] for i in range(2)]
    batch = (torch.cat([d["images"] for d in data]), torch.cat([d["labels"] for d in data]))  # [4, 3, 32, 32]
    texts = label_embeddings(minilm, kept, ("a photo of a {}.",))
    losses = []
    model = train_small_extractor(list(remap_labels([batch], lut)), SmallTrainConfig(steps=20, lr=3e-3, widths=(16, 32)),
                                  class_names=kept, text_features=texts, callback=lambda s, v: losses.append(v))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses  # it fits the rooms' labels
    assert model(batch[0] * 2 - 1).shape == (4, 384, 16, 16)


def test_train_semantics_cli(tmp_path, capsys, monkeypatch):
    from openlsm.cli import train_semantics as cli

    try:
        real, names = synth()
    except OpenLSMError as e:
        pytest.skip(f"synthrooms unavailable: {e}")
    monkeypatch.setattr(cli, "load_synthrooms", lambda: (lambda split, res, views: real(split, res, views=views,
                                                                                         length=2), names))
    out = tmp_path / "small.safetensors"
    cmd = cli.TrainSemantics(out=out, resolution=32, views=1, steps=2, batch_size=1, widths=(8, 16), log_every=1,
                               val_batches=1)
    assert cmd.run() == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= summary["val_pixel_accuracy"] <= 1.0 and summary["steps"] == 2
    model = load_small_extractor(out)
    assert model.class_names == [n for n in names if n != "void"] and model.feature_dim == 384


def test_train_semantics_batches_same_with_data_workers():
    """--data-workers renders the same rooms in the same order as the single-process loader."""
    from openlsm.cli import train_semantics as cli

    try:
        real, _ = synth()
    except OpenLSMError as e:
        pytest.skip(f"synthrooms unavailable: {e}")
    ds = real("train", 32, views=2, length=50)

    def first(workers, n=2):
        cmd = cli.TrainSemantics(resolution=32, views=2, batch_size=2, data_workers=workers)
        gen = cmd._batches(ds, 7, torch.device("cpu"))
        out = [next(gen) for _ in range(n)]
        gen.close()
        return out

    one, zero = first(1), first(0)
    for (im1, lb1), (im0, lb0) in zip(one, zero):
        assert im1.shape == im0.shape == (4, 3, 32, 32) and lb1.shape == (4, 32, 32)
        torch.testing.assert_close(im1.float(), im0.float(), rtol=0, atol=1e-6)
        assert torch.equal(lb1.long(), lb0.long())
    assert not torch.equal(one[0][1], one[1][1])  # different rooms per batch
