"""predict() + scoring with an oracle model whose geometry and semantics are the ground truth at an unknown scale:
the camera alignment, source depths, rendering, decoding and pose recovery must then give near-perfect scores."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from openlsm.cameras.cameras import unproject_depth
from openlsm.data.synthrooms import CLASSES, SynthRooms
from openlsm.eval.harness import Accumulator, EvalConfig, score_lsm
from openlsm.eval.predict import predict
from openlsm.gaussians.gaussians import Gaussians, rgb_to_sh0
from openlsm.metrics.align import relative_to_first
from openlsm.models.semantics.base import SemanticExtractor

K = len(CLASSES) - 1  # void is not a class
SCALE = 2.5


def eval_labels(labels):
    return labels.long() - 1  # void (0) -> -1 = ignored


class Oracle(torch.nn.Module):
    """Predicts the GT points of the inputs (in view 0's frame, times SCALE) as pixel-aligned Gaussians whose
    features are one-hot class vectors; texts are the identity, so decoding returns the GT class."""

    def __init__(self, sample):
        super().__init__()
        self.sample = sample
        self.config = SimpleNamespace(semantic="small", semantic_dim=K, feature_fit_iters=0, color_fit_iters=0,
                                      refine_steps=0)
        self.lseg_feature_extractor = SemanticExtractor()

    def forward(self, img1, img2, generator=None):
        s = self.sample
        H, W = s["depths"].shape[-2:]
        rel = relative_to_first(s["c2w"][None].float())[0]
        pts = unproject_depth(s["depths"][:2].float(), s["Ks"][:2].float(), rel[:2]) * SCALE  # [2, H, W, 3]
        n = 2 * H * W
        foot = (s["depths"][:2] * SCALE * 0.5 / s["Ks"][:2, None, None, 0, 0]).reshape(n)  # half a pixel
        lab = eval_labels(s["labels"][:2]).reshape(n)
        feats = F.one_hot(lab.clamp_min(0), K).float() * (lab >= 0)[:, None]
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        g = Gaussians(pts.reshape(n, 3), quats, foot.log()[:, None].expand(n, 3), torch.full((n,), 6.0),
                      rgb_to_sh0(s["images"][:2].permute(0, 2, 3, 1).reshape(n, 3))[:, None], feats)
        g = g._map(lambda t: t[None])
        ones = torch.ones(1, H, W)
        geo = SimpleNamespace(pts3d_1=pts[0:1], pts3d_2=pts[1:2], conf_1=ones, conf_2=ones)
        return SimpleNamespace(gaussians=g, geometry=geo)

    def expand_features(self, maps):
        return F.avg_pool2d(maps, 2)  # [V, K, H/2, W/2], like feature_expansion's downsampling


@pytest.fixture(scope="module")
def sample():
    return SynthRooms("test", 32, views=3, length=1)[0]


def test_oracle_prediction_scores_near_perfect(sample):
    oracle = Oracle(sample)
    pred = predict(oracle, sample, backend="torch", render_repeats=1)
    assert pred.scale == pytest.approx(SCALE, rel=1e-4)
    assert pred.rgb.shape == (3, 3, 32, 32) and pred.features.shape == (3, K, 16, 16)
    # GT cameras moved into the prediction's frame: view 0 at the origin, the others scaled by SCALE
    gt_rel = relative_to_first(sample["c2w"][None].float())[0]
    assert torch.allclose(pred.cameras.c2w[:, :3, 3], gt_rel[:, :3, 3] * SCALE, atol=1e-4)
    assert torch.allclose(pred.source_depths, sample["depths"][:2] * SCALE, rtol=1e-4, atol=1e-4)

    rec = score_lsm(oracle, sample, eval_labels(sample["labels"]), torch.eye(K), [], Accumulator(K),
                    EvalConfig(render_repeats=1, backend="torch"))
    assert rec["abs_rel"] < 1e-5 and rec["inlier"] == 1.0
    assert rec["src_miou"] > 0.8 and rec["src_acc"] > 0.9, rec
    assert rec["tgt_acc"] > 0.85, rec  # targets also see regions that the inputs never saw
    assert rec["psnr"] > 20 and rec["ssim"] > 0.6, rec
    assert rec["pose_rot_deg"] < 0.05 and rec["pose_trans_deg"] < 0.05, rec
    assert rec["focal_rel_err"] < 0.01 and rec["recon_s"] > 0 and rec["render_fps"] > 0


def test_wrong_geometry_scores_worse(sample):
    """Control: shuffling the predicted depth must break the depth and pose scores."""
    oracle = Oracle(sample)
    g = torch.Generator().manual_seed(0)
    bad = dict(sample)
    perm = torch.randperm(sample["depths"][:2].numel(), generator=g)
    bad["depths"] = torch.cat([sample["depths"][:2].reshape(-1)[perm].reshape(2, 32, 32), sample["depths"][2:]])
    oracle.sample = bad  # the oracle now predicts from shuffled depths; the scorer uses the true sample
    rec = score_lsm(oracle, sample, eval_labels(sample["labels"]), torch.eye(K), [], Accumulator(K),
                    EvalConfig(render_repeats=1, backend="torch", recover_pose=False))
    assert rec["abs_rel"] > 0.1 and rec["inlier"] < 0.5, rec
