import pytest
import torch

from openlsm.errors import OpenLSMError
from openlsm.models.semantics import OTHER, FeaturePCA, relevancy, segment

D = 8
BASIS = torch.eye(D)  # text k = e_k (orthonormal "embeddings")


def scene(seed=0):
    """Gaussians: 3 classes along e0, e1, e2 (+noise), plus 'unknown' ones along e6 (orthogonal to all texts)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    feats = BASIS[truth] * 3 + 0.05 * torch.randn(len(truth), D, generator=g)
    unknown = BASIS[6].expand(3, D) * 2 + 0.01 * torch.randn(3, D, generator=g)
    return torch.cat([feats, unknown]), truth


def test_segment_gaussians_and_threshold():
    feats, truth = scene()
    seg = segment(feats, BASIS[:3], temperature=0.1)
    assert torch.equal(seg.labels[:8], truth)
    torch.testing.assert_close(seg.probs.sum(-1), torch.ones(11))
    # the unknown gaussians are equally far from all three texts: probabilities ~1/3
    torch.testing.assert_close(seg.probs[8:], torch.full((3, 3), 1 / 3), atol=0.05, rtol=0)
    seg = segment(feats, BASIS[:3], temperature=0.1, threshold=0.5)
    assert torch.equal(seg.labels[:8], truth) and (seg.labels[8:] == OTHER).all()
    # probabilities are a softmax of cosine / temperature (float64 brute force)
    f = feats.double() / feats.double().norm(dim=-1, keepdim=True)
    ref = torch.softmax(f @ BASIS[:3].double().T / 0.1, -1)
    torch.testing.assert_close(seg.probs.double(), ref, rtol=1e-5, atol=1e-6)


def test_segment_background_class_and_view_maps():
    feats = torch.zeros(2, 4, 5, D)  # [V, H, W, D] per-pixel features of two views
    feats[..., 1] = 1.0  # class 1 everywhere
    feats[0, :2, :, :] = BASIS[3]  # top half of view 0 is "background" (text e3)
    seg = segment(feats, BASIS[:3], background=BASIS[3:4], temperature=0.1)
    assert seg.labels.shape == (2, 4, 5) and seg.probs.shape == (2, 4, 5, 3)
    assert (seg.labels[0, :2] == OTHER).all() and (seg.labels[0, 2:] == 1).all() and (seg.labels[1] == 1).all()
    with pytest.raises(OpenLSMError):
        segment(feats, torch.randn(3, D + 1))
    with pytest.raises(OpenLSMError):
        segment(feats, ["sofa"])  # strings need an encoder


def test_relevancy_matches_bruteforce():
    feats, _ = scene()
    negatives = BASIS[4:6] + 0.3 * BASIS[0]  # negatives slightly correlated with the query
    rel = relevancy(feats, BASIS[0], negatives=negatives, temperature=0.2)
    f = torch.nn.functional.normalize(feats.double(), dim=-1)
    q = BASIS[0].double()
    n = torch.nn.functional.normalize(negatives.double(), dim=-1)
    ref = torch.stack([torch.stack([torch.exp(fi @ q / 0.2) / (torch.exp(fi @ q / 0.2) + torch.exp(fi @ nj / 0.2))
                                    for nj in n]).min() for fi in f])
    torch.testing.assert_close(rel.double(), ref, rtol=1e-5, atol=1e-6)
    assert (rel[[0, 3, 6]] > 0.5).all() and (rel[[1, 2, 4, 5]] < 0.5).all()


def test_pca_colours_consistent_across_views():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 3, generator=g))[0]  # features on a 3-d subspace
    coeffs = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 2.0, 1.0])
    view_a = coeffs @ basis.T + 1.0
    pca = FeaturePCA.fit(view_a)
    # the components span the same subspace as the data (brute-force check via projections)
    torch.testing.assert_close((pca.components.T @ basis).abs().max(1).values, torch.ones(3), atol=1e-3, rtol=0)
    # fit once, apply to another view/frame: identical features -> identical colours
    view_b = torch.cat([view_a[:10], view_a[:10] * 0 + 1.0])
    rgb_a, rgb_b = pca.apply(view_a), pca.apply(view_b)
    assert rgb_a.shape == (500, 3) and rgb_a.min() >= 0 and rgb_a.max() <= 1
    torch.testing.assert_close(rgb_b[:10], rgb_a[:10])
    # deterministic: refitting on a permutation gives the same projection (sign convention)
    pca2 = FeaturePCA.fit(view_a[torch.randperm(500, generator=g)])
    torch.testing.assert_close(pca2.components, pca.components, atol=1e-4, rtol=0)
    pca3 = FeaturePCA.from_state_dict(pca.state_dict())
    torch.testing.assert_close(pca3.apply(view_b), rgb_b)
    # per-pixel maps [V, H, W, D] work too
    assert pca.apply(view_a[:12].reshape(2, 2, 3, 32)).shape == (2, 2, 3, 3)
