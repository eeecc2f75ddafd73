"""Bundled example image pairs (package data; see ATTRIBUTION.md) for `openlsm demo`.

    list_examples()                 # {"synthrooms": [img0, img1], "armchairs": [...], "meeting_room": [...]}
    example_images("armchairs")     # the two image paths
    write_synth_example()           # (re)generate the SynthRooms test pair + its ground-truth cameras

Each example is a folder holding exactly two images (sorted by name); a `ground_truth.json` beside them
(`{"width", "height", "Ks", "c2w"}`, OpenCV c2w) lets the demo compare its camera estimate with the truth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OpenLSMError

EXAMPLES_DIR = Path(__file__).parent
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_ORDER = ("synthrooms", "armchairs", "meeting_room")  # the demo takes the first one present


def list_examples() -> dict[str, list[Path]]:
    found = {}
    for d in sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(imgs) == 2:
            found[d.name] = imgs
    order = {n: i for i, n in enumerate(DEFAULT_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def default_example() -> str:
    names = list(list_examples())
    if not names:
        raise OpenLSMError(f"no example images are installed in {EXAMPLES_DIR}")
    return names[0]


def example_images(name: str) -> list[Path]:
    examples = list_examples()
    if name not in examples:
        raise OpenLSMError(f"unknown example {name!r}; available: {', '.join(examples) or 'none'}")
    return examples[name]


def ground_truth(name: str) -> dict | None:
    path = EXAMPLES_DIR / name / "ground_truth.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_synth_example(folder: str | os.PathLike | None = None, index: int = 0, resolution: int = 256) -> Path:
    """Render SynthRooms test scene `index` (2 views) to `folder`/image_{0,1}.png + ground_truth.json."""
    import torch

    from ..cameras.io import write_text_atomic
    from ..data.synthrooms import CLASSES, SynthConfig, make_sample, split_seed
    from ..io.outputs import save_png

    folder = Path(folder) if folder is not None else EXAMPLES_DIR / "synthrooms"
    seed = split_seed("test", index)
    sample = make_sample(seed, SynthConfig(height=resolution, width=resolution, views=2))
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(2):
        save_png(folder / f"image_{v}.png", sample["images"][v].permute(1, 2, 0).cpu())
    labels = sample["labels"].cpu()
    doc = {"source": f"SynthRooms test split, index {index} (scene seed {seed})", "width": resolution,
           "height": resolution, "convention": "opencv", "pose": "camera_to_world",
           "Ks": sample["Ks"].cpu().double().tolist(), "c2w": sample["c2w"].cpu().double().tolist(),
           "median_depth": [float(sample["depths"][v][sample["valid"][v]].median()) for v in range(2)],
           "classes_present": [CLASSES[int(c)] for c in torch.unique(labels) if 0 < c < len(CLASSES)]}
    write_text_atomic(folder / "ground_truth.json", json.dumps(doc, indent=2) + "\n").chmod(0o644)  # package data
    return folder
