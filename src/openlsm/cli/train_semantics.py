"""`openlsm train-semantics`: train the compact semantic extractor on SynthRooms.

    openlsm train-semantics --out small.safetensors --resolution 64 --steps 2000

Per-pixel features are aligned with the text embeddings of the dataset's class names (MiniLM by default) by a
softmax cross-entropy over cosine similarities / temperature; held-out synonyms are never used in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import OpenLSMError


def load_synthrooms():
    """(SynthRooms class, class names) from openlsm.data.synthrooms."""
    try:
        from ..data.synthrooms import CLASSES, SynthRooms
    except ImportError:
        try:  # the package may not re-export them
            from ..data.synthrooms.dataset import SynthRooms
            from ..data.synthrooms.scene import CLASSES
        except ImportError as e:
            raise OpenLSMError("openlsm.data.synthrooms is not available in this installation") from e
    return SynthRooms, CLASSES


@dataclass
class TrainSemantics:
    """Train the small language-aligned feature extractor (LSeg-style) on SynthRooms."""

    out: Path = Path("small_extractor.safetensors")
    """Output weights (safetensors with config, class names and text encoder in the metadata)."""
    resolution: int = 64
    """Training image size (a multiple of 16)."""
    views: int = 2
    """Views per SynthRooms sample (all are used as training images)."""
    steps: int = 2000
    batch_size: int = 4
    """Samples per step (each contributes `views` images)."""
    lr: float = 2e-3
    temperature: float = 0.07
    """Softmax temperature on cosine similarities."""
    text_encoder: Literal["minilm", "clip"] = "minilm"
    clip_weights: Path | None = None
    """CLIP / LSeg checkpoint for --text-encoder clip."""
    widths: tuple[int, ...] = (32, 64, 128, 256)
    """Channels of the extractor stages (strides 2, 4, 8, 16)."""
    seed: int = 0
    device: str = "cpu"
    log_every: int = 100
    val_batches: int = 8
    """Validation batches for the final pixel accuracy."""

    def run(self) -> int:
        import json

        from ..models.semantics import (
            SmallTrainConfig,
            batches_from_dataset,
            drop_classes,
            get_text_encoder,
            label_embeddings,
            pixel_accuracy,
            remap_labels,
            save_small_extractor,
            train_small_extractor,
        )

        SynthRooms, all_names = load_synthrooms()
        if self.resolution % 16:
            raise OpenLSMError(f"--resolution must be a multiple of 16, got {self.resolution}")
        train = SynthRooms("train", self.resolution, views=self.views)
        names, lut = drop_classes(list(all_names))  # 'void' pixels are ignored, not a class
        kwargs = {"weights": self.clip_weights} if self.text_encoder == "clip" else {}
        texts = label_embeddings(get_text_encoder(self.text_encoder, **kwargs), names)
        cfg = SmallTrainConfig(steps=self.steps, lr=self.lr, temperature=self.temperature,
                               text_encoder=self.text_encoder, widths=tuple(self.widths), seed=self.seed,
                               device=self.device)

        def log(step: int, loss: float) -> None:
            if step % self.log_every == 0 or step == self.steps - 1:
                print(f"step {step:6d}  loss {loss:.4f}", flush=True)

        batches = remap_labels(batches_from_dataset(train, self.batch_size, self.seed), lut)
        model = train_small_extractor(batches, cfg, class_names=names, text_features=texts, callback=log)
        val = SynthRooms("val", self.resolution, views=self.views)
        val_batches = remap_labels(batches_from_dataset(val, self.batch_size, self.seed + 1), lut)
        acc = pixel_accuracy(model, val_batches, texts, max_batches=self.val_batches)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        save_small_extractor(model, self.out)
        print(json.dumps({"out": str(self.out), "val_pixel_accuracy": acc, "classes": len(names)}))
        return 0
