"""2D segmentation quality of a semantic extractor: mIoU and pixel accuracy, with training names and with
held-out synonyms (the open-vocabulary check of issue 5).

    sets = query_sets(encoder, ["wall", "floor", ...])       # {"train": [K, D], "held_out_1": ..., "held_out_2": ...}
    scores = evaluate_extractor(model, batches, sets)        # {"train": {"miou": .., "accuracy": ..}, ...}
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch

from ...eval.metrics import confusion_matrix, segmentation_scores
from .small_extractor import pixel_logits
from .text import TextEncoder, label_embeddings
from .vocab import HELD_OUT


def miou_and_accuracy(conf: torch.Tensor) -> tuple[float, float]:
    """Mean IoU over classes present in the ground truth or the prediction, and pixel accuracy."""
    scores = segmentation_scores(conf)
    return scores["miou"], scores["acc"]


def query_sets(encoder: TextEncoder, names: list[str]) -> dict[str, torch.Tensor]:
    """Text features of the training names, and of each column of held-out synonyms ([K, D] each)."""
    sets = {"train": label_embeddings(encoder, names)}
    width = min(len(HELD_OUT.get(n, ())) for n in names)
    for j in range(width):
        sets[f"held_out_{j + 1}"] = label_embeddings(encoder, [HELD_OUT[n][j] for n in names])
    return sets


@torch.no_grad()
def evaluate_extractor(model, batches: Iterable, text_sets: dict[str, torch.Tensor],
                       max_batches: int | None = None) -> dict[str, dict[str, float]]:
    """mIoU / accuracy of argmax-cosine labels for each text set. batches: (images [B,3,H,W] in [0,1],
    labels [B,H,W] with ids into the text sets' rows, < 0 ignored)."""
    model.eval()
    device = next(model.parameters()).device
    k = next(iter(text_sets.values())).shape[0]
    confs = {name: torch.zeros(k, k, dtype=torch.int64) for name in text_sets}
    for images, labels in itertools.islice(batches, max_batches):
        images, labels = images.to(device).float(), labels.to(device)
        for name, texts in text_sets.items():
            pred = pixel_logits(model, images, texts.to(device).float(), 1.0).argmax(1)
            confs[name] += confusion_matrix(pred, labels, k)
    out = {}
    for name, conf in confs.items():
        miou, acc = miou_and_accuracy(conf)
        out[name] = {"miou": miou, "accuracy": acc, "pixels": int(conf.sum())}
    return out
