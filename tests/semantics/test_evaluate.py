import math

import torch

from openlsm.models.semantics.evaluate import confusion_matrix, evaluate_extractor, miou_and_accuracy


def test_confusion_and_miou_hand_computed():
    gt = torch.tensor([0, 0, 1, 1, 2, -1])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    conf = confusion_matrix(pred, gt, 4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    miou, acc = miou_and_accuracy(conf)
    # IoU: class0 1/(2+2-1)=1/3, class1 2/(2+3-2)=2/3, class2 0/1=0, class3 absent -> excluded
    assert math.isclose(miou, (1 / 3 + 2 / 3 + 0) / 3)
    assert math.isclose(acc, 3 / 5)
    assert miou_and_accuracy(confusion_matrix(gt.clamp_min(0), gt.clamp_min(0), 3)) == (1.0, 1.0)


class _Oracle(torch.nn.Module):
    """Features = the text vector of the true class (from a label map smuggled in the red channel)."""

    def __init__(self, texts):
        super().__init__()
        self.texts = torch.nn.Parameter(texts.clone())

    def forward(self, images):  # images in [-1, 1]
        ids = ((images[:, 0] + 1) / 2 * 10).round().long()  # [B, H, W]
        feats = self.texts[ids].permute(0, 3, 1, 2)  # [B, D, H, W]
        return torch.nn.functional.avg_pool2d(feats, 2)


def test_evaluate_extractor_perfect_and_shuffled_queries():
    texts = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 4:] = 1
    labels[:, :, 6:] = 2
    images = (labels.float() / 10)[:, None].expand(1, 3, 8, 8).contiguous()
    out = evaluate_extractor(_Oracle(texts), [(images, labels)], {"right": texts, "swapped": texts[[1, 0, 2]]})
    assert math.isclose(out["right"]["miou"], 1.0)
    assert out["swapped"]["miou"] < 0.5
