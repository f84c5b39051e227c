"""Training: MODNet objectives, distillation, BN re-estimation, schedules, the training
loop (single process or torchrun DDP) and iterative prune -> fine-tune compression."""
from .bn import recalibrate_bn
from .distill import FEATURE_TAPS, FeatureTaps, Student
from .distributed import Context, setup, teardown
from .loader import image_batches
from .loop import FitResult, TrainConfig, fit
from .losses import (DistillWeights, MattingScales, distill_loss, matting_loss, soc_loss)
from .schedule import lr_at, macs_targets

__all__ = ["Context", "DistillWeights", "FEATURE_TAPS", "FeatureTaps", "FitResult",
           "MattingScales", "Student", "TrainConfig", "distill_loss", "fit", "image_batches",
           "lr_at", "macs_targets", "matting_loss", "recalibrate_bn", "setup", "soc_loss",
           "teardown"]
