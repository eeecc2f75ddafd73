"""Bounds for the held-out synonym queries of issue 5: if every pixel's feature were exactly a training-name
embedding, how well could the held-out names still segment?

    python bench/held_out_text_bound.py --text-table .whl/text_table.safetensors   # or --text-encoder minilm
    python bench/held_out_text_bound.py --rooms 40 --extractor outputs/sem11.safetensors

Prints one JSON line per held-out set: classes right when each class's feature is its training-name embedding,
and the wrong ones as (class, predicted). With --rooms N also the mIoU / accuracy on N SynthRooms test rooms x 4
views (256²) of two oracle features: `gt_class` (each pixel's ground-truth class embedding: a perfect closed-set
extractor pinned to the training names; a real one may land nearer the synonyms) and, with --extractor, `predicted_class` (the embedding of the class the extractor picks with the
training names: its closed-set quality, perfectly aligned).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from openlsm.models.semantics import get_text_encoder
from openlsm.models.semantics.evaluate import miou_and_accuracy, query_sets
from openlsm.models.semantics.vocab import CLASSES


def room_bounds(sets: dict[str, torch.Tensor], rooms: int, extractor: str | None) -> dict[str, dict]:
    from openlsm.data.synthrooms import CLASSES as ROOM_CLASSES
    from openlsm.data.synthrooms import SynthRooms
    from openlsm.eval.metrics import confusion_matrix
    from openlsm.models.semantics import drop_classes, load_small_extractor, pixel_logits, remap_labels

    names, lut = drop_classes(list(ROOM_CLASSES))
    assert names == list(CLASSES)
    train = F.normalize(sets["train"].float(), dim=-1)  # [K, D]
    model = load_small_extractor(extractor) if extractor else None
    k = len(names)
    # [K] per set: the query each class's training-name vector is nearest to (what an oracle pixel of it predicts)
    nearest = {s: (train @ F.normalize(texts.float(), dim=-1).T).argmax(-1) for s, texts in sets.items()}
    oracles = ["gt_class"] + (["predicted_class"] if model else [])
    confs = {(o, s): torch.zeros(k, k, dtype=torch.int64) for o in oracles for s in sets}
    test = SynthRooms("test", 256, views=4, length=rooms)
    for start in range(0, rooms, 4):
        b = test.sample_batch(range(start, min(start + 4, rooms)))
        batches = remap_labels([(b["images"].flatten(0, 1), b["labels"].flatten(0, 1))], lut)
        images, labels = next(iter(batches))
        classes = {"gt_class": labels.clamp_min(0)}  # ignored pixels (< 0) are left out of the confusion anyway
        if model is not None:
            with torch.no_grad():
                classes["predicted_class"] = pixel_logits(model, images, train, 1.0).argmax(1)
        for o, cls in classes.items():
            for s in sets:
                confs[(o, s)] += confusion_matrix(nearest[s][cls], labels, k)
    out: dict[str, dict] = {}
    for (o, s), conf in confs.items():
        miou, acc = miou_and_accuracy(conf)
        out.setdefault(s, {})[o] = {"miou": round(miou, 4), "accuracy": round(acc, 4)}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--text-encoder", default="table")
    p.add_argument("--text-table", default=".whl/text_table.safetensors")
    p.add_argument("--rooms", type=int, default=0, help="SynthRooms test rooms for the pixel-level bounds")
    p.add_argument("--extractor", default=None, help="small-extractor weights for the predicted_class bound")
    args = p.parse_args()
    kwargs = {"path": args.text_table} if args.text_encoder == "table" else {}
    sets = query_sets(get_text_encoder(args.text_encoder, **kwargs), list(CLASSES))
    rooms = room_bounds(sets, args.rooms, args.extractor) if args.rooms else {}
    train = sets["train"]
    for name, held in sets.items():
        if name == "train":
            continue
        pred = (train @ held.T).argmax(1).tolist()  # [K]: the held-out name nearest to each training name
        wrong = [(CLASSES[i], CLASSES[p]) for i, p in enumerate(pred) if p != i]
        print(json.dumps({"set": name, "right": len(CLASSES) - len(wrong), "classes": len(CLASSES), "wrong": wrong,
                          **({"rooms": args.rooms, **rooms[name]} if rooms else {})}))


if __name__ == "__main__":
    main()
