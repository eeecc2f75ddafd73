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
    class_balance: float = 0.5
    """Class weights ~ pixel frequency^-class_balance in the cross-entropy (0: unweighted)."""
    align_weight: float = 0.0
    """Adds align_weight x mean(1 - cosine) between each pixel's feature and its class's text embedding, to keep
    features near the text vectors for names never trained on (it did not help the held-out synonyms in the one
    GPU run that tried it; docs/benchmarks.md)."""
    init: Path | None = None
    """Go on training from these extractor weights (same widths) instead of from scratch: a train-semantics file
    or an LSM.save folder (the shipped `small` model's extractor: src/openlsm/weights/lsm_small)."""
    text_encoder: Literal["minilm", "clip", "table"] = "minilm"
    clip_weights: Path | None = None
    """CLIP / LSeg checkpoint for --text-encoder clip."""
    text_table: Path | None = None
    """Precomputed text embeddings for --text-encoder table (written by `--write-text-table`)."""
    write_text_table: Path | None = None
    """Only write the embeddings of every prompt this command needs (training and held-out names) and exit."""
    widths: tuple[int, ...] = (32, 64, 128, 256)
    """Channels of the extractor stages (strides 2, 4, 8, 16)."""
    decoder_width: int | None = None
    """Channels of the top-down decoder (default: the first stage's width, as the shipped extractor)."""
    max_minutes: float | None = None
    """Wall-clock budget: the learning-rate schedule follows time or steps, whichever is further along, and
    training stops when the budget is used (for fixed GPU time slots; such runs are not bit-reproducible)."""
    batch_reuse: int = 1
    """Optimizer steps per rendered batch, each on its own random flip / crop: more steps per second when
    rendering the data, not the extractor, limits the GPU (--steps counts optimizer steps)."""
    crop_scale: float = 1.0
    """Random crops with sides between this share of the image and all of it, resized back (1: no crops)."""
    data_workers: int = 0
    """Processes computing SynthRooms scenes and cameras while the main process renders and trains (same images
    as 0 workers, in the same order)."""
    seed: int = 0
    device: str = "cpu"
    log_every: int = 100
    val_batches: int = 8
    """Validation batches for the final pixel accuracy."""
    evaluate: Path | None = None
    """Skip training: load these extractor weights (file or LSM.save folder, as --init) and report the test-split
    mIoU (needs --test-scenes)."""
    test_scenes: int = 0
    """SynthRooms test scenes for the final mIoU with training names and held-out synonyms (0: skip)."""

    def run(self) -> int:
        import json

        import torch

        from ..models.semantics import (
            SmallTrainConfig,
            drop_classes,
            get_text_encoder,
            label_embeddings,
            load_small_extractor,
            pixel_accuracy,
            remap_labels,
            save_small_extractor,
            train_small_extractor,
        )

        SynthRooms, all_names = load_synthrooms()
        if self.resolution % 16:
            raise OpenLSMError(f"--resolution must be a multiple of 16, got {self.resolution}")
        if self.data_workers < 0:
            raise OpenLSMError(f"--data-workers must be >= 0, got {self.data_workers}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise OpenLSMError(f"--max-minutes must be > 0, got {self.max_minutes}")
        from ..models.semantics.evaluate import evaluate_extractor, query_sets
        from ..models.semantics.text import save_text_table
        from ..models.semantics.vocab import HELD_OUT, TEMPLATES, prompts_for

        train = SynthRooms("train", self.resolution, views=self.views)
        names, lut = drop_classes(list(all_names))  # 'void' pixels are ignored, not a class
        kwargs = {"clip": {"weights": self.clip_weights}, "table": {"path": self.text_table}}.get(
            self.text_encoder, {})
        encoder = get_text_encoder(self.text_encoder, **kwargs)
        if self.write_text_table is not None:
            words = names + [h for n in names for h in HELD_OUT.get(n, ())]
            save_text_table(encoder, [p for w in words for p in prompts_for(w, TEMPLATES)], self.write_text_table)
            print(json.dumps({"text_table": str(self.write_text_table), "words": len(words)}))
            return 0
        texts = label_embeddings(encoder, names)
        cfg = SmallTrainConfig(steps=self.steps, lr=self.lr, temperature=self.temperature,
                               text_encoder=self.text_encoder, widths=tuple(self.widths),
                               decoder_width=self.decoder_width, seed=self.seed,
                               device=self.device, class_balance=self.class_balance,
                               batch_reuse=self.batch_reuse, crop_scale=self.crop_scale,
                               align_weight=self.align_weight,
                               max_seconds=None if self.max_minutes is None else 60 * self.max_minutes)

        done = []  # steps trained (a --max-minutes run may stop before --steps)

        def log(step: int, loss: float) -> None:
            done[:] = [step + 1]
            if step % self.log_every == 0 or step == self.steps - 1:
                print(f"step {step:6d}  loss {loss:.4f}", flush=True)

        device = torch.device(self.device)
        if self.evaluate is not None:
            model = load_small_extractor(self.evaluate, device)
            result = {"weights": str(self.evaluate), "classes": len(names)}
        else:
            batches = remap_labels(self._batches(train, self.seed, device), lut)
            init = load_small_extractor(self.init) if self.init is not None else None
            model = train_small_extractor(batches, cfg, class_names=names, text_features=texts, callback=log,
                                          init=init)
            batches.close()  # stops the data workers before the validation ones start
            val = SynthRooms("val", self.resolution, views=self.views)
            val_batches = remap_labels(self._batches(val, self.seed + 1, device), lut)
            acc = pixel_accuracy(model, val_batches, texts, max_batches=self.val_batches)
            val_batches.close()
            self.out.parent.mkdir(parents=True, exist_ok=True)
            save_small_extractor(model, self.out)
            result = {"out": str(self.out), "steps": done[0], "val_pixel_accuracy": acc, "classes": len(names)}
        if self.test_scenes > 0:
            test = SynthRooms("test", self.resolution, views=self.views, length=self.test_scenes)
            ordered = (test.sample_batch(range(i, min(i + self.batch_size, len(test))), device=device)
                       for i in range(0, len(test), self.batch_size))
            flat = ((b["images"].flatten(0, 1), b["labels"].flatten(0, 1)) for b in ordered)
            result["test"] = evaluate_extractor(model, remap_labels(flat, lut),
                                                query_sets(encoder, names))
            result["test_scenes"] = self.test_scenes
        print(json.dumps(result))
        return 0

    def _batches(self, dataset, seed: int, device):
        """Random batches; on CUDA or with data workers all scenes of a batch are rendered together
        (SynthRooms.sample_batch / SynthStream: the same images either way)."""
        import torch

        from ..data.synthrooms.pipeline import SynthStream
        from ..models.semantics import batches_from_dataset

        if device.type == "cpu" and self.data_workers == 0:
            yield from batches_from_dataset(dataset, self.batch_size, seed)
            return
        gen = torch.Generator().manual_seed(seed)

        def seed_lists():
            while True:
                yield dataset.seeds(torch.randint(len(dataset), (self.batch_size,), generator=gen).tolist())

        with SynthStream(seed_lists(), dataset.cfg, device, workers=self.data_workers, epoch=dataset.epoch) as stream:
            for b in stream:
                yield b["images"].flatten(0, 1), b["labels"].flatten(0, 1)
