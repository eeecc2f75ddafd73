import hashlib
import subprocess
import sys

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.semantics import CLASSES, HELD_OUT, get_text_encoder, label_embeddings
from openlsm.models.semantics import text as text_module
from openlsm.models.semantics.text import (
    PRECOMPUTED_TABLE,
    MiniLMTextEncoder,
    TableTextEncoder,
    save_text_table,
)
from openlsm.models.semantics.vocab import default_prompts


def test_minilm_embeddings_are_normalised_cached_and_semantic(minilm):
    e = minilm.encode(["a photo of a sofa.", "a photo of a couch.", "a photo of a ceiling."])
    assert e.shape == (3, 384) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert e[0] @ e[1] > e[0] @ e[2]  # sofa ~ couch, not ceiling
    again = minilm.encode(["a photo of a couch."])
    assert torch.equal(again[0], e[1]) and "a photo of a couch." in minilm._cache
    # batch composition does not change an embedding (padding is masked out of the mean)
    alone = minilm._encode_batch(["a photo of a ceiling."])
    torch.testing.assert_close(torch.nn.functional.normalize(alone, dim=-1)[0], e[2], rtol=1e-4, atol=1e-5)


def test_held_out_synonyms_land_on_their_class(minilm):
    template = ("a photo of a {}.",)
    classes = label_embeddings(minilm, list(CLASSES), template)  # [17, 384]
    assert classes.shape == (17, 384)
    queries = label_embeddings(minilm, [HELD_OUT[c][0] for c in CLASSES], template)  # first synonym per class
    predicted = [CLASSES[i] for i in (queries @ classes.T).argmax(1).tolist()]
    hits = sum(p == c for p, c in zip(predicted, CLASSES))
    assert hits >= 12, list(zip(CLASSES, predicted))  # open-vocabulary retrieval far above chance (1/17)
    for cls in ("sofa", "cabinet", "plant"):  # couch, cupboard, houseplant
        assert predicted[CLASSES.index(cls)] == cls


def test_factory_errors():
    with pytest.raises(OpenLSMError):
        get_text_encoder("bert-huge")
    with pytest.raises(OpenLSMError):
        get_text_encoder("clip")  # needs weights
    with pytest.raises(OpenLSMError):
        get_text_encoder("clip", weights="/nonexistent/demo_e200.ckpt")


def test_shipped_table_is_minilm_on_the_default_prompts(minilm):
    table = TableTextEncoder(PRECOMPUTED_TABLE)
    assert table.source == hashlib.sha256((minilm.path / "model.safetensors").read_bytes()).hexdigest()
    prompts = default_prompts()  # every one is in the table (a missing text raises)
    live = torch.nn.functional.normalize(minilm._encode_batch(prompts), dim=-1)  # the model itself, no cache
    torch.testing.assert_close(table.encode(prompts), live, rtol=0, atol=1e-5)


def test_default_labels_need_neither_transformers_nor_the_model():
    code = ("import sys; from openlsm.models.semantics import CLASSES, get_text_encoder, label_embeddings\n"
            "e = get_text_encoder('minilm'); label_embeddings(e, [*CLASSES, 'couch'])\n"
            "assert 'transformers' not in sys.modules and e.model is None, 'loaded'\n"
            "e.encode('a purple giraffe'); assert e.model is not None")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_a_table_from_other_weights_is_not_used(tmp_path, monkeypatch):
    def live(self):
        raise RuntimeError("live model load")

    monkeypatch.setattr(MiniLMTextEncoder, "_load", live)
    assert MiniLMTextEncoder().encode("a photo of a wall.").shape == (1, 384)  # from the shipped table
    other = save_text_table(TableTextEncoder(PRECOMPUTED_TABLE), ["a photo of a wall."], tmp_path / "t.safetensors",
                            source="sha256 of other weights")
    monkeypatch.setattr(text_module, "PRECOMPUTED_TABLE", other)
    with pytest.raises(RuntimeError, match="live model load"):
        MiniLMTextEncoder().encode("a photo of a wall.")
    monkeypatch.setattr(text_module, "PRECOMPUTED_TABLE", PRECOMPUTED_TABLE)
    with pytest.raises(RuntimeError, match="live model load"):
        MiniLMTextEncoder(precomputed=False).encode("a photo of a wall.")
