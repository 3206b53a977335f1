r"""Training losses and error metrics of ANI ensembles.

Energy loss with ANI's per-atom scaling (TorchANI's training examples, NeuroChem): for a
molecule ``b`` of ``N_b`` atoms and ensemble member ``m``

.. math::  L^E_m = \frac{1}{B} \sum_b \frac{(E_{m,b} - E^{ref}_b)^2}{N_b}

so that large molecules do not dominate. The optional force loss is the mean squared
force-component error over the real atoms, ``L^F_m = \sum_{i,c} (F_{m,ic} - F^{ref}_{ic})^2
/ (3 \sum_b N_b)``, and the total is ``\sum_m (L^E_m + w_F L^F_m)``: summing (not
averaging) over members gives each member exactly the gradient of its own loss. Losses
are in the unit of the model (Hartree, Hartree/Å); metrics are reported in kcal/mol and
kcal/mol/Å.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..units import EV_TO_KCALMOL


def energy_sq_errors(pred, ref, num_atoms, mol_mask):
    """Per-member sums of per-atom-scaled squared energy errors.

    Args:
      pred: ``[M, B]`` member energies.
      ref: ``[B]`` reference energies (same unit).
      num_atoms: ``[B]`` atom counts (padding molecules: any value > 0).
      mol_mask: ``[B]`` bool, True for real molecules.

    Returns:
      ``[M]`` ``sum_b mask_b (pred_mb - ref_b)^2 / N_b``.
    """
    diff = pred - ref[None, :]
    sq = jnp.where(mol_mask[None, :], diff * diff / num_atoms[None, :].astype(pred.dtype), 0.0)
    return jnp.sum(sq, axis=1)


def force_sq_errors(pred, ref, atom_mask):
    """Per-member sums of squared force-component errors over real atoms.

    Args:
      pred: ``[M, N, 3]`` member forces; ref: ``[N, 3]``; atom_mask: ``[N]`` bool.

    Returns:
      ``[M]``.
    """
    diff = pred - ref[None]
    sq = jnp.where(atom_mask[None, :, None], diff * diff, 0.0)
    return jnp.sum(sq, axis=(1, 2))


def l2_penalty(params, l2: dict):
    """``sum_l l2[l] * sum ||W_l||^2`` over every element network (NeuroChem's per-layer
    ``l2valu``; biases excluded). ``l2`` maps a 0-based layer index to its coefficient.
    Summed over members, so each member gets its own penalty's gradient."""
    total = 0.0
    for layers in params.values():
        for l, coef in l2.items():
            if int(l) < len(layers) and coef:
                total = total + coef * jnp.sum(layers[int(l)]["W"] ** 2)
    return total


def error_metrics(pred_ev, ref_ev, *, per_atom: np.ndarray | None = None) -> dict:
    """RMSE and MAE (kcal/mol) of energies given in eV (host, float64).

    ``per_atom``: if given (atom counts), also the RMSE of errors divided by ``sqrt(N)``.
    """
    d = (np.asarray(pred_ev, np.float64) - np.asarray(ref_ev, np.float64)) * EV_TO_KCALMOL
    out = {"rmse": float(np.sqrt(np.mean(d * d))) if d.size else float("nan"),
           "mae": float(np.mean(np.abs(d))) if d.size else float("nan")}
    if per_atom is not None and d.size:
        out["rmse_sqrt_atom"] = float(np.sqrt(np.mean(d * d / np.asarray(per_atom))))
    return out


def relative_energy_metrics(pred_ev, ref_ev, groups) -> dict:
    """MAE and RMSE (kcal/mol) of conformer energies relative to each group's mean
    (``groups``: one molecule label per conformation); groups of one are skipped."""
    pred, ref, groups = np.asarray(pred_ev, np.float64), np.asarray(ref_ev, np.float64), np.asarray(groups)
    diffs = []
    for g in np.unique(groups):
        k = groups == g
        if k.sum() < 2:
            continue
        diffs.append((pred[k] - pred[k].mean()) - (ref[k] - ref[k].mean()))
    d = np.concatenate(diffs) * EV_TO_KCALMOL if diffs else np.zeros(0)
    return {"mae": float(np.mean(np.abs(d))) if d.size else float("nan"),
            "rmse": float(np.sqrt(np.mean(d * d))) if d.size else float("nan"), "n": int(d.size)}
