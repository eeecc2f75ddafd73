import itertools
import math

import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.semantics import (
    SmallTrainConfig,
    label_embeddings,
    load_small_extractor,
    pixel_accuracy,
    pixel_logits,
    save_small_extractor,
    train_small_extractor,
)

NAMES = ["wall", "sofa", "plant", "lamp"]


def batches(images, labels, bs=8):
    return [(images[i : i + bs], labels[i : i + bs]) for i in range(0, len(images), bs)]


def random_texts(k=4, dim=8):
    """[k, dim] unit text embeddings, fixed seed (for tests that need no real text encoder)."""
    return torch.nn.functional.normalize(torch.randn(k, dim, generator=torch.Generator().manual_seed(0)), dim=-1)


def test_small_extractor_learns_language_aligned_features(minilm, shapes, tmp_path):
    train = batches(*shapes(32, 32, seed=0))
    test = batches(*shapes(16, 32, seed=1))
    texts = label_embeddings(minilm, NAMES)  # [4, 384] MiniLM class embeddings (fixed targets)
    losses = []
    cfg = SmallTrainConfig(steps=60, lr=3e-3, widths=(16, 32, 48), seed=0)
    model = train_small_extractor(train, cfg, class_names=NAMES, text_features=texts,
                                  callback=lambda step, loss: losses.append(loss))
    assert len(losses) == 60
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    acc = pixel_accuracy(model, test, texts)
    majority = max(float((test_labels == c).float().mean()) for c in range(4)
                   for test_labels in [torch.cat([lb for _, lb in test])])
    assert acc > max(0.8, majority + 0.15), (acc, majority)

    # every class is recognised, not just the background (mean per-class recall far above chance = 0.25)
    with torch.no_grad():
        preds = torch.cat([pixel_logits(model, im, texts, 1.0).argmax(1) for im, _ in test])
    gts = torch.cat([lb for _, lb in test])
    recalls = [float((preds[gts == c] == c).float().mean()) for c in range(4)]
    assert min(recalls) > 0.5, recalls

    feats = model(test[0][0] * 2 - 1)
    assert feats.shape == (8, 384, 16, 16)
    save_small_extractor(model, tmp_path / "small.safetensors")
    again = load_small_extractor(tmp_path / "small.safetensors")
    assert again.class_names == NAMES and again.text_encoder_name == "minilm"
    torch.testing.assert_close(again(test[0][0] * 2 - 1), feats)


def test_bad_inputs(shapes):
    with pytest.raises(OpenLSMError):
        train_small_extractor([], SmallTrainConfig(steps=2), text_features=torch.randn(2, 8))
    images, labels = shapes(2, 32)
    with pytest.raises(OpenLSMError, match="out of range"):
        train_small_extractor([(images, labels)], SmallTrainConfig(steps=2), text_features=torch.randn(2, 8))
    with pytest.raises(OpenLSMError):
        train_small_extractor([(images, labels)], SmallTrainConfig(steps=2))


def test_class_weights_follow_inverse_frequency():
    from openlsm.models.semantics.small_extractor import class_weights

    torch.testing.assert_close(class_weights(torch.tensor([5.0, 5.0, 5.0]), 0.5), torch.ones(3))
    w = class_weights(torch.tensor([1.0, 4.0, 0.0]), 0.5)
    assert abs(float(w[0] / w[1]) - 2.0) < 1e-5  # (1/4)^-0.5 = 2
    assert abs(float(w[:2].mean()) - 1.0) < 1e-5 and float(w[2]) == 1.0  # unseen class untouched
    assert float(class_weights(torch.tensor([1.0] + [1e9] * 11), 1.0)[0]) == 10.0  # clamped (else ~12)
    torch.testing.assert_close(class_weights(torch.tensor([1.0, 9.0]), 0.0), torch.ones(2))


def test_training_goes_on_from_init_weights(shapes):
    images, labels = shapes(8, 32)
    texts = random_texts()
    cfg = SmallTrainConfig(steps=3, widths=(8, 16), seed=0, lr=1e-3)
    first = train_small_extractor(batches(images, labels), cfg, text_features=texts)
    zero = SmallTrainConfig(steps=1, widths=(8, 16), seed=1, lr=0.0)  # lr 0: weights must stay those of init
    again = train_small_extractor(batches(images, labels), zero, text_features=texts, init=first)
    torch.testing.assert_close(again(images * 2 - 1), first(images * 2 - 1))
    fresh = train_small_extractor(batches(images, labels), zero, text_features=texts)
    assert not torch.allclose(fresh(images * 2 - 1), first(images * 2 - 1))
    with pytest.raises(OpenLSMError, match="widths"):
        train_small_extractor(batches(images, labels), SmallTrainConfig(steps=1, widths=(8, 32)),
                              text_features=texts, init=first)


def test_decoder_width_is_saved_and_files_without_it_load_as_before(shapes, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    images, labels = shapes(8, 32)
    texts = random_texts()
    wide = train_small_extractor(batches(images, labels), SmallTrainConfig(steps=2, widths=(8, 16), decoder_width=24),
                                 text_features=texts)
    assert wide.head.in_channels == 24 and wide.laterals[0].out_channels == 24
    save_small_extractor(wide, tmp_path / "w.safetensors")
    back = load_small_extractor(tmp_path / "w.safetensors")
    assert back.cfg.decoder_width == 24
    torch.testing.assert_close(back(images * 2 - 1), wide(images * 2 - 1))
    # a file written before decoder_width existed (its config has no such key) builds the old decoder
    narrow = train_small_extractor(batches(images, labels), SmallTrainConfig(steps=2, widths=(8, 16)),
                                   text_features=texts)
    save_small_extractor(narrow, tmp_path / "n.safetensors")
    with safe_open(tmp_path / "n.safetensors", "pt") as f:
        meta = f.metadata()
    tensors = load_file(tmp_path / "n.safetensors")
    key = next(k for k, v in meta.items() if "widths" in v)
    cfg = json.loads(meta[key])
    cfg.pop("decoder_width")
    save_file(tensors, tmp_path / "old.safetensors", metadata={**meta, key: json.dumps(cfg)})
    old = load_small_extractor(tmp_path / "old.safetensors")
    assert old.cfg.decoder_width is None and old.head.in_channels == 8
    torch.testing.assert_close(old(images * 2 - 1), narrow(images * 2 - 1))
    with pytest.raises(OpenLSMError, match="decoder width"):
        train_small_extractor(batches(images, labels), SmallTrainConfig(steps=1, widths=(8, 16)),
                              text_features=texts, init=wide)


def test_time_budget_anneals_and_stops(shapes, monkeypatch):
    """max_seconds: the schedule follows the budget's share of time when that is ahead of the step count."""
    import openlsm.models.semantics.small_extractor as se

    images, labels = shapes(8, 32)
    texts = random_texts()
    base = {"steps": 40, "widths": (8, 16), "seed": 0, "lr": 1e-3}

    def run(**kw):
        lrs = []
        real_step = torch.optim.AdamW.step

        def step(opt, *a, **k):
            lrs.append(opt.param_groups[0]["lr"])
            return real_step(opt, *a, **k)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)
        model = train_small_extractor(batches(images, labels), SmallTrainConfig(**base, **kw), text_features=texts)
        monkeypatch.undo()
        return model, lrs

    plain, plain_lrs = run()
    roomy, roomy_lrs = run(max_seconds=1e6)  # a budget far from used changes (next to) nothing
    assert roomy_lrs == pytest.approx(plain_lrs, rel=1e-6) and len(plain_lrs) == 40
    torch.testing.assert_close(roomy(images * 2 - 1), plain(images * 2 - 1), rtol=1e-4, atol=1e-5)
    # warm-up over 40 // 20 = 2 steps, then cosine to 5 %: step 39 is 37 / 38 of the way
    last = 1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 37 / 38)))
    assert plain_lrs[0] == pytest.approx(1e-3 / 2) and plain_lrs[-1] == pytest.approx(last)

    clock = iter(float(t) for t in range(1000))  # fake clock: each reading is 1 s later
    monkeypatch.setattr(se.time, "perf_counter", lambda: next(clock))
    _, timed = run(max_seconds=10.0)
    # readings: start at 0, step k reads 1 + k... -> time share (k + 1) / 10 of the budget, ahead of k / 40
    assert 5 <= len(timed) <= 10, timed
    assert timed[-1] < 0.2 * 1e-3 < timed[2]  # annealed to near the floor within the budget
    assert all(a >= b for a, b in itertools.pairwise(timed))


def test_pixel_logits_in_chunks_equal_one_pass(monkeypatch, shapes):
    """Large batches are upsampled a few images at a time (CUDA's 2^31-element limit): same logits, same grads."""
    import openlsm.models.semantics.small_extractor as se

    images, _ = shapes(5, 32)
    texts = random_texts()
    model = se.SmallExtractor(se.SmallExtractorConfig(widths=(8, 16), feature_dim=8))

    def logits_and_grads():
        model.zero_grad()
        out = pixel_logits(model, images, texts, 0.07)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    whole, whole_grads = logits_and_grads()
    monkeypatch.setattr(se, "MAX_UPSAMPLED_ELEMENTS", 2 * 8 * 32 * 32)  # two images per chunk: 2 + 2 + 1
    sizes, interpolate = [], torch.nn.functional.interpolate

    def counting(x, size=None, **kw):
        if size == (32, 32):
            sizes.append(x.shape[0])
        return interpolate(x, size=size, **kw)

    monkeypatch.setattr(se.F, "interpolate", counting)
    chunked, chunked_grads = logits_and_grads()
    assert sizes == [2, 2, 1]
    assert whole.shape == (5, 4, 32, 32)
    torch.testing.assert_close(chunked, whole)
    for a, b in zip(chunked_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_extractor_loads_from_an_lsm_folder(tmp_path, monkeypatch):
    """The shipped weights are an LSM.save folder: its frozen 2D extractor loads on its own."""
    from types import SimpleNamespace

    from openlsm.models.lsm.model import LSM, LSMConfig

    lsm = LSM(LSMConfig.tiny()).eval()
    lsm.save(tmp_path / "lsm")
    ext = load_small_extractor(tmp_path / "lsm")
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ext(images), lsm.lseg_feature_extractor(images))
    assert not ext.training and ext.class_names is None
    monkeypatch.setattr(LSM, "load", classmethod(lambda cls, p: SimpleNamespace(config=SimpleNamespace(semantic="lseg"))))
    with pytest.raises(OpenLSMError, match="'lseg' extractor"):
        load_small_extractor(tmp_path / "lsm")
    with pytest.raises(OpenLSMError, match="not found"):
        load_small_extractor(tmp_path / "missing.safetensors")


def test_augment_keeps_labels_on_their_pixels():
    """Crops + flips: labels are the nearest-neighbour sample of the same affine map the images get (checked
    against a float64 brute-force map of pixel centres), and no crop is the identity up to the batch flip."""
    from openlsm.models.semantics.small_extractor import augment

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 5, (3, 16, 20), generator=g)
    images = torch.rand(3, 3, 16, 20, generator=g)
    same_i, same_l = augment(images, labels, torch.Generator().manual_seed(0), hflip=False)
    assert torch.equal(same_i, images) and torch.equal(same_l, labels)

    gen = torch.Generator().manual_seed(1)
    out_i, out_l = augment(images, labels, gen, hflip=True, crop_scale=0.5)
    assert out_i.shape == images.shape and out_l.shape == labels.shape and out_l.dtype == torch.long
    # replay the random draws to know each image's map: x_src = s * sign * x + tx (normalised coordinates)
    gen = torch.Generator().manual_seed(1)
    s = 0.5 + 0.5 * torch.rand(3, generator=gen, dtype=torch.float32).double()
    shift = (1 - s)[:, None] * (2 * torch.rand(3, 2, generator=gen).double() - 1)
    sign = torch.where(torch.rand(3, generator=gen) < 0.5, -1.0, 1.0).double()
    assert (sign < 0).any() and (sign > 0).any()  # both flipped and unflipped images are checked
    H, W = 16, 20
    for b in range(3):
        for y in range(H):
            for x in range(W):
                nx, ny = (2 * x + 1) / W - 1, (2 * y + 1) / H - 1
                sx, sy = s[b] * sign[b] * nx + shift[b, 0], s[b] * ny + shift[b, 1]
                px, py = ((sx + 1) * W - 1) / 2, ((sy + 1) * H - 1) / 2  # source pixel coordinates
                assert 0 <= round(float(px)) < W and 0 <= round(float(py)) < H  # crops stay inside
                x0, y0 = int(px.floor()), int(py.floor())  # bilinear, border-clamped, for the image
                fx, fy = float(px) - x0, float(py) - y0
                cx = [min(max(v, 0), W - 1) for v in (x0, x0 + 1)]
                cy = [min(max(v, 0), H - 1) for v in (y0, y0 + 1)]
                img = images[b].double()
                want = ((1 - fy) * ((1 - fx) * img[:, cy[0], cx[0]] + fx * img[:, cy[0], cx[1]])
                        + fy * ((1 - fx) * img[:, cy[1], cx[0]] + fx * img[:, cy[1], cx[1]]))
                torch.testing.assert_close(out_i[b, :, y, x].double(), want, atol=1e-5, rtol=0)
                if abs(px - px.round()) > 0.49 or abs(py - py.round()) > 0.49:
                    continue  # a tie between two source pixels: either is right
                assert out_l[b, y, x] == labels[b, int(py.round()), int(px.round())]


def test_batch_reuse_takes_several_steps_per_fetched_batch(shapes):
    images, labels = shapes(8, 32)
    fetched = []

    def stream():
        for i in itertools.count():
            fetched.append(i)
            yield images[:4], labels[:4]

    cfg = SmallTrainConfig(steps=6, widths=(8, 16), batch_reuse=3, crop_scale=0.7)
    steps = []
    train_small_extractor(stream(), cfg, text_features=random_texts(), callback=lambda s, _: steps.append(s))
    assert steps == list(range(6)) and len(fetched) <= 3  # 2 batches used (a generator may run one ahead)
    with pytest.raises(OpenLSMError, match="batch_reuse"):
        train_small_extractor(stream(), SmallTrainConfig(steps=1, widths=(8, 16), batch_reuse=0),
                              text_features=random_texts())


def test_align_weight_adds_the_mean_cosine_distance_to_the_class_text(shapes):
    images, labels = shapes(4, 32)
    labels[0, :4] = -1  # ignored pixels take no part
    texts = random_texts()
    losses = {}
    for w in (0.0, 0.7):
        cfg = SmallTrainConfig(steps=1, widths=(8, 16), seed=0, lr=0.0, hflip=False, class_balance=0.0,
                               align_weight=w)
        model = train_small_extractor([(images, labels)], cfg, text_features=texts,
                                      callback=lambda s, loss, w=w: losses.__setitem__(w, loss))
    with torch.no_grad():  # lr 0: the model still holds the weights the loss was computed with
        feats = torch.nn.functional.interpolate(model(images * 2 - 1), size=images.shape[-2:], mode="bilinear")
        feats = torch.nn.functional.normalize(feats, dim=1).permute(0, 2, 3, 1)[labels >= 0].double()  # [P, D]
        cos = (feats * texts.double()[labels[labels >= 0]]).sum(-1)
    assert losses[0.7] - losses[0.0] == pytest.approx(0.7 * float((1 - cos).mean()), rel=1e-4)
