import math

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.semantics.clip_text import CLIP, CLIPConfig, half_linear_weights, load_clip_weights

CFG = CLIPConfig.tiny()


def tiny_clip(seed=0, visual=True):
    torch.manual_seed(seed)
    return CLIP(CFG, with_visual=visual).eval()


def tokens_with_eot(b=3, eot_at=(3, 5, 7), seed=1):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(1, CFG.vocab_size - 2, (b, CFG.context_length), generator=g)
    for i, p in enumerate(eot_at):
        toks[i, p] = CFG.vocab_size - 1  # EOT = largest id
    return toks


def reference_hidden(clip: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """Float64 brute force of the text transformer: explicit per-head causal attention, QuickGELU MLP."""
    sd = {k: v.double() for k, v in clip.state_dict().items()}
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][: tokens.shape[1]]  # [B, L, C]
    _b, n, c = x.shape
    h = CFG.text_heads
    d = c // h

    def ln(v, p):
        mu, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * sd[p + ".weight"] + sd[p + ".bias"]

    for i in range(CFG.text_layers):
        p = f"transformer.resblocks.{i}."
        y = ln(x, p + "ln_1")
        qkv = y @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        q, k, v = qkv.split(c, -1)
        out = torch.zeros_like(x)
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            for t in range(n):
                scores = (q[:, t, sl][:, None] * k[:, : t + 1, sl]).sum(-1) / math.sqrt(d)  # only j <= t
                out[:, t, sl] = (torch.softmax(scores, -1)[..., None] * v[:, : t + 1, sl]).sum(1)
        x = x + out @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        y = ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        x = x + (y * torch.sigmoid(1.702 * y)) @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return ln(x, "ln_final")


def test_text_tower_matches_float64_reference_and_shapes():
    clip = tiny_clip().double()
    toks = tokens_with_eot()
    hidden = clip.text_hidden_states(toks)
    assert hidden.shape == (3, CFG.context_length, CFG.text_width)
    torch.testing.assert_close(hidden, reference_hidden(clip, toks), rtol=1e-9, atol=1e-9)
    feats = clip.encode_text(toks)
    assert feats.shape == (3, CFG.embed_dim)
    # the text feature is the hidden state at the argmax token (EOT), projected
    expected = hidden[torch.arange(3), torch.tensor([3, 5, 7])] @ clip.text_projection
    torch.testing.assert_close(feats, expected)


def test_causal_mask():
    clip = tiny_clip()
    a = tokens_with_eot()
    b = a.clone()
    i = 4
    b[:, i + 1 :] = torch.randint(1, 10, b[:, i + 1 :].shape)
    ha, hb = clip.text_hidden_states(a), clip.text_hidden_states(b)
    torch.testing.assert_close(ha[:, : i + 1], hb[:, : i + 1])  # positions <= i ignore later tokens
    assert (ha[:, i + 1 :] - hb[:, i + 1 :]).abs().max() > 1e-3  # later positions do see them
    # sample 0 has its EOT at 3 < i: its text feature does not depend on what follows
    torch.testing.assert_close(clip.encode_text(a)[0], clip.encode_text(b)[0])


def test_visual_tower_shape():
    out = tiny_clip().encode_image(torch.randn(2, 3, CFG.image_size, CFG.image_size))
    assert out.shape == (2, CFG.embed_dim)


def test_half_layout_runs_close_to_fp32():
    clip = tiny_clip()
    toks = tokens_with_eot()
    ref = clip.encode_text(toks)
    half = half_linear_weights(tiny_clip())
    assert half.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert half.ln_final.weight.dtype == torch.float32 and half.token_embedding.weight.dtype == torch.float32
    torch.testing.assert_close(half.encode_text(toks).float(), ref, rtol=0.05, atol=0.05)


def test_load_openai_and_lseg_layouts(tmp_path):
    src = tiny_clip(seed=3)
    toks = tokens_with_eot()
    openai = {**src.state_dict(), "input_resolution": 224}  # extra non-tensor entry, as some exports carry
    torch.save(openai, tmp_path / "clip.pt")
    dst = load_clip_weights(tiny_clip(seed=4), tmp_path / "clip.pt")
    torch.testing.assert_close(dst.encode_text(toks), src.encode_text(toks))

    half = half_linear_weights(tiny_clip(seed=5))
    lseg = {"state_dict": {f"net.clip_pretrained.{k}": v for k, v in half.state_dict().items()}}
    lseg["state_dict"]["net.scratch.head1.weight"] = torch.zeros(1)  # non-CLIP keys are ignored
    torch.save(lseg, tmp_path / "lseg.ckpt")
    text_only = load_clip_weights(tiny_clip(seed=6, visual=False), tmp_path / "lseg.ckpt")
    assert text_only.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float32  # cast on load
    torch.testing.assert_close(text_only.encode_text(toks), half.encode_text(toks).float(), rtol=0.05, atol=0.05)

    torch.save({"foo": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(OpenLSMError):
        load_clip_weights(tiny_clip(), tmp_path / "bad.pt")
    with pytest.raises(OpenLSMError):
        load_clip_weights(tiny_clip(), tmp_path / "missing.pt")
