"""Training LSM: losses, the per-step loss computation and a resumable (DDP-capable) trainer.

    from openlsm.train import TrainConfig, train, load_trained_model
    summary = train(TrainConfig(model="tiny", resolution=32, steps=20, batch_size=2, out=Path("runs/tiny")))
    model = load_trained_model("runs/tiny/model")

CLI: `openlsm train --config small --data synthrooms --steps 20000 --out runs/small [--resume] [--max-minutes 8]`.
"""

from .checkpoint import export_weights, load_checkpoint, load_trained_model
from .losses import (
    LossWeights,
    avg_dis_normalize,
    confidence_regression_loss,
    dssim_loss,
    feature_loss,
    l1_loss,
    target_cameras,
)
from .step import LossModule, compute_losses
from .trainer import TrainConfig, train

__all__ = ["LossModule", "LossWeights", "TrainConfig", "avg_dis_normalize", "compute_losses",
           "confidence_regression_loss", "dssim_loss", "export_weights", "feature_loss", "l1_loss",
           "load_checkpoint", "load_trained_model", "target_cameras", "train"]
