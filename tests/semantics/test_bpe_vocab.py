import torch

from openlsm.models.semantics.bpe import ClipTokenizer, bytes_to_unicode, clean_text
from openlsm.models.semantics.vocab import (
    CLASSES,
    HELD_OUT,
    TEMPLATES,
    held_out_names,
    pluralize,
    prompts_for,
)

TOK = ClipTokenizer()


def test_vocab_layout_and_special_tokens():
    assert TOK.vocab_size == 49408
    assert (TOK.sot, TOK.eot) == (49406, 49407)
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256  # a bijection over bytes
    # single-byte words: id of "<char></w>" = 256 + position of the byte in the table
    order = list(table)
    assert TOK.encode("a") == [256 + order.index(ord("a"))] == [320]


def test_known_tokenisation():
    # widely published CLIP ids: "a photo of a cat" / "dog" / "."
    assert TOK.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert TOK.encode("a dog.") == [320, 1929, 269]


def test_padded_batch_context_and_lowercase():
    toks = TOK(["A Photo of a CAT", "x" * 500])
    assert toks.shape == (2, 77) and toks.dtype == torch.int64
    assert toks[0, 0] == 49406 and toks[0, 6] == 49407 and toks[0, 7:].eq(0).all()
    assert toks[0, 1:6].tolist() == TOK.encode("a photo of a cat")
    assert toks[1, -1] == 49407  # truncated, EOT kept at the end
    assert int(toks[0].argmax()) == 6  # the text feature position = EOT = argmax id


def test_round_trip():
    for s in ["a photo of a sofa", "Hello   World", "café au lait", "unbelievably long compoundwords here", "3 chairs"]:
        assert TOK.decode(TOK.encode(s)) == clean_text(s)
    assert TOK.decode(TOK(["a red lamp"])[0].tolist()) == "a red lamp"  # specials and padding dropped


def test_vocab_lists():
    assert len(CLASSES) == 17 and set(HELD_OUT) == set(CLASSES)
    assert HELD_OUT["sofa"][0] == "couch" and "cupboard" in HELD_OUT["cabinet"]
    assert "houseplant" in HELD_OUT["plant"] and "screen" in HELD_OUT["tv"]
    from openlsm.data.synthrooms import CLASSES as SYNTH_CLASSES
    assert list(CLASSES) == [c for c in SYNTH_CLASSES if c != "void"]
    training_prompts = " ".join(p for c in CLASSES for p in prompts_for(c, TEMPLATES))
    for name in held_out_names():  # never part of a training prompt
        assert name not in CLASSES and f" {name}" not in training_prompts
    assert pluralize("shelf") == "shelves" and pluralize("box") == "boxes" and pluralize("desk lamp") == "desk lamps"
    assert prompts_for("box", ("a photo of {}.",), plural=True) == ["a photo of boxes."]
