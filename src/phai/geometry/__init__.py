"""Geometry: displacements, cutoffs and neighbor lists, for padded flat atom sets.

Conventions (shared by every descriptor in phai):

* A system is a flat set of ``N`` atom slots ``R [N, 3]`` (Å); several molecules in one
  call are disjoint groups of slots, and padding slots are masked, never given a species.
* A neighbor list is either a dense index array ``idx [N, K]`` (jax-md's ``Dense``
  format: row ``i`` lists the neighbors of atom ``i``, unused slots hold the sentinel
  ``N``) or flat lists of unordered pairs ``[2, P]`` and angular triples ``[3, T]``
  (padding entries hold ``N``). Host code builds flat lists directly; jitted code (MD)
  derives them from a dense list with :func:`pairs_from_dense` / :func:`triples_from_dense`.
* Vectors point from the centre atom to the neighbor: ``dR[i, k] = R[idx[i, k]] - R[i]``,
  through a jax-md displacement function (free space by default; periodic spaces give
  the minimum image).
"""

from .cutoff import cosine_cutoff
from .neighbors import (
    PairLists,
    dense_from_pairs,
    host_pair_lists,
    neighbor_pairs,
    periodic_neighbor_pairs,
)
from .pairs import (
    neighbor_vectors,
    pair_vectors,
    pairs_from_dense,
    triples_from_dense,
    triu_slot_pairs,
)

__all__ = [
    "PairLists",
    "cosine_cutoff",
    "dense_from_pairs",
    "host_pair_lists",
    "neighbor_pairs",
    "neighbor_vectors",
    "pair_vectors",
    "pairs_from_dense",
    "periodic_neighbor_pairs",
    "triples_from_dense",
    "triu_slot_pairs",
]
