"""Text-only bound for the held-out synonym queries: if every pixel's feature were exactly its class's
training-name embedding, which classes would the held-out names still get wrong?

    python bench/held_out_text_bound.py --text-table .whl/text_table.safetensors   # or --text-encoder minilm
Prints one JSON line per held-out set: classes right, and the wrong ones as (class, predicted).
"""

from __future__ import annotations

import argparse
import json

from openlsm.models.semantics import get_text_encoder
from openlsm.models.semantics.evaluate import query_sets
from openlsm.models.semantics.vocab import CLASSES


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--text-encoder", default="table")
    p.add_argument("--text-table", default=".whl/text_table.safetensors")
    args = p.parse_args()
    kwargs = {"path": args.text_table} if args.text_encoder == "table" else {}
    sets = query_sets(get_text_encoder(args.text_encoder, **kwargs), list(CLASSES))
    train = sets.pop("train")
    for name, held in sets.items():
        pred = (train @ held.T).argmax(1).tolist()  # [K]: the held-out name nearest to each training name
        wrong = [(CLASSES[i], CLASSES[p]) for i, p in enumerate(pred) if p != i]
        print(json.dumps({"set": name, "right": len(CLASSES) - len(wrong), "classes": len(CLASSES), "wrong": wrong}))


if __name__ == "__main__":
    main()
