"""Training ANI ensembles: losses, self energies, the trainer, checkpoints, transfer and Δ-learning.

>>> from phai.train import StreamedTrainingSet, TrainConfig, TrainingSet, train
>>> ts = TrainingSet(numbers, positions, energies_ev, forces_ev_per_a)
>>> res = train(TrainConfig(init="ani-1x", freeze_layers=(0, 2), epochs=50), ts, out_dir="run")
>>> pot = phai.load("run")                       # the trained ensemble
>>> big = StreamedTrainingSet("ani1x-release.h5", "wb97x_dz.energy", "wb97x_dz.forces")
>>> train(TrainConfig(), big, out_dir="big")   # read batch by batch: memory ~ one batch

``phai train`` is the command-line form (:mod:`phai.commands.train`).
"""

from .batches import ShapePolicy, TrainingSet, split_by_group
from .delta import (
           DeltaPotential,
           delta_record,
           delta_set,
           load_delta_folder,
           model_delta_set,
)
from .full_batch import fit_full_batch
from .losses import error_metrics, relative_energy_metrics
from .model import ANI1X_HIDDEN, ani1x_aev, load_start, scratch_model
from .sae import fit_self_energies
from .stream import StreamedTrainingSet, open_training_set
from .trainer import (
           FitResult,
           TrainConfig,
           Trainer,
           freeze_labels,
           make_optimizer,
           plot_learning_curve,
           train,
)

__all__ = [
           "ANI1X_HIDDEN",
           "DeltaPotential",
           "FitResult",
           "ShapePolicy",
           "StreamedTrainingSet",
           "TrainConfig",
           "Trainer",
           "TrainingSet",
           "ani1x_aev",
           "delta_record",
           "delta_set",
           "error_metrics",
           "fit_full_batch",
           "fit_self_energies",
           "freeze_labels",
           "load_delta_folder",
           "load_start",
           "make_optimizer",
           "model_delta_set",
           "open_training_set",
           "plot_learning_curve",
           "relative_energy_metrics",
           "scratch_model",
           "split_by_group",
           "train",
]
