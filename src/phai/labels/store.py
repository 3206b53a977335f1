"""Durable, parallel, resumable labelling and export to the ANI HDF5 layout.

Store layout (a folder)::

    STORE/labels/<key>.json     one finished label (or failure) per file
    STORE/labels/.<key>.*.tmp   transient; removed or left behind only by a crash

``key = sha256(level, charge, multiplicity, numbers, positions rounded to 1e-8 Å)[:40]``:
the same geometry labelled at another level gets another file, the same geometry at the
same level is never computed twice. Each file is written by the parent process as soon as
its worker returns: JSON into a temporary file in the same folder, ``fsync``, then
``os.replace`` (atomic on POSIX) and an ``fsync`` of the folder, so a killed run leaves
only whole labels behind and a new run skips them. Worker processes end within a second
of their parent's death (however it died), so killing the labelling process frees its
cores at once.

Why one file per label rather than one SQLite database: labels arrive one every few
seconds or minutes, so the per-file cost is nothing; files need no locking, can be
inspected, copied or merged with ordinary tools (two machines can label disjoint parts into
two folders and ``cp`` them together), and a corrupt file affects one label, which is then
recomputed. A file records the geometry, charge, multiplicity, molecule name, metadata, the
level, the labeller's type, configuration and program version, the status (``ok`` or
``failed`` with the reason), energy (eV), forces (eV/Å), extras (scalars in eV; per-atom
arrays such as :class:`~phai.labels.labellers.PySCFUKSLabeller`'s populations as lists, in
their own units), wall time and finishing time.

Failures (:class:`~phai.labels.labellers.LabelFailed`, or any exception raised by the
labeller in a worker) are recorded as ``status: failed`` with the message; a later run
skips them unless ``retry_failed=True``. Invalid input (:class:`~phai.errors.InputError`)
is raised before anything is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..errors import InputError
from .conformers import Conformer
from .labellers import LabelFailed, Labeller, check_electrons

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def geometry_key(numbers, positions, charge: int = 0, multiplicity: int = 1) -> str:
    """sha256 over ``charge, multiplicity, numbers (int64), positions (float64, rounded to 1e-8 Å)``."""
    h = hashlib.sha256()
    h.update(f"{int(charge)}|{int(multiplicity)}|".encode())
    h.update(np.ascontiguousarray(numbers, np.int64).tobytes())
    h.update(np.ascontiguousarray(np.round(np.asarray(positions, np.float64), 8) + 0.0).tobytes())
    return h.hexdigest()[:40]


def label_key(level: str, numbers, positions, charge: int = 0, multiplicity: int = 1) -> str:
    """The store key of one geometry at one level of theory (40 hex digits)."""
    h = hashlib.sha256()
    h.update(level.encode())
    h.update(b"|")
    h.update(geometry_key(numbers, positions, charge, multiplicity).encode())
    return h.hexdigest()[:40]


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON (``json.dump`` defaults) durably, through :func:`phai.atomic.atomic_output`."""
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh)


def save_conformers(path, conformers: Iterable[Conformer]) -> Path:
    """Write conformers as a JSON list (atomically), e.g. ``STORE/conformers.json``.

    One object per conformer: ``name``, ``numbers`` ``[A]``, ``positions`` ``[A, 3]`` (Å),
    ``charge`` (e), ``multiplicity``, ``info``. :func:`load_conformers` reads it back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, [{"name": c.name, "numbers": np.asarray(c.numbers).tolist(),
                              "positions": np.asarray(c.positions).tolist(), "charge": int(c.charge),
                              "multiplicity": int(c.multiplicity), "info": c.info} for c in conformers])
    return path


def load_conformers(path) -> list[Conformer]:
    """The conformers of a file written by :func:`save_conformers`, in file order."""
    with open(path) as fh:
        raw = json.load(fh)
    return [Conformer(r["name"], np.asarray(r["numbers"]), np.asarray(r["positions"]), r["charge"],
                      r["multiplicity"], r["info"]) for r in raw]


def read_record(path: Path) -> dict | None:
    """A stored label, or None when the file is unreadable (then it is recomputed)."""
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("status") in ("ok", "failed") else None


def _worker_init(threads: int, parent: int | None = None) -> None:
    """Set a worker's threads; with ``parent`` (the labelling process's pid), also make the
    worker exit as soon as that process is gone (see :func:`_exit_with_parent`)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    try:
        from pyscf import lib

        lib.num_threads(threads)
    except ImportError:
        pass
    if parent is not None:
        import threading

        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """Poll (every ``every`` s) and end this worker process once its parent has died.

    Only the parent writes labels, so a worker whose parent was killed (``kill PID``, SIGKILL,
    an out-of-memory kill) computes labels nobody will store; without this it would run on,
    holding its cores, until its current label ends (minutes for a DFT anion). A dead parent's
    children are re-parented, so ``os.getppid()`` changes.
    """
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _run_one(labeller: Labeller, conf: Conformer) -> dict:
    """Label one conformer in a worker; failures become a record, never an exception."""
    t0 = time.perf_counter()
    try:
        out = labeller.label(conf.numbers, conf.positions, conf.charge, conf.multiplicity)
    except LabelFailed as exc:
        return {"status": "failed", "error": str(exc), "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 -- a crash inside PySCF/tblite is a failed label with its reason
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
    out = dict(out)
    energy = out.pop("energy")
    forces = out.pop("forces", None)
    seconds = out.pop("seconds", time.perf_counter() - t0)
    return {"status": "ok", "energy": float(energy),
            "forces": None if forces is None else np.asarray(forces, np.float64).tolist(),
            "extras": {k: float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64).tolist() for k, v in out.items()},
            "seconds": seconds}


def _record(labeller: Labeller, conf: Conformer, result: dict, key: str) -> dict:
    return {"key": key, "level": labeller.level, "labeller": type(labeller).__name__,
            "config": labeller.config(), "provenance": labeller.provenance(),
            "geometry_key": geometry_key(conf.numbers, conf.positions, conf.charge, conf.multiplicity),
            "name": conf.name, "numbers": np.asarray(conf.numbers).tolist(),
            "positions": np.asarray(conf.positions, np.float64).tolist(),
            "charge": int(conf.charge), "multiplicity": int(conf.multiplicity), "info": dict(conf.info),
            **result, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def label_many(labeller: Labeller, conformers: Sequence[Conformer], store_path, processes: int = 1,
               threads: int | None = None, retry_failed: bool = False, progress: bool = False) -> dict:
    """Label ``conformers`` into ``store_path``, skipping labels already there.

    Args:
      labeller: any :class:`~phai.labels.labellers.Labeller` (must pickle: labellers hold only
        their settings).
      conformers: geometries to label; every charge/multiplicity is checked first.
      store_path: the store folder (created).
      processes: worker processes (``ProcessPoolExecutor`` with the ``spawn`` start method, so
        a script calling this must guard its entry point with ``if __name__ == "__main__":``);
        ``<= 1`` labels in this process.
      threads: OpenMP/BLAS threads per worker process (set before PySCF loads in it; default
        1). With ``processes <= 1`` the calling process's threads are left alone unless given.
      retry_failed: recompute labels stored as failed.
      progress: a tqdm bar on stderr.

    Returns ``{"total", "reused", "computed", "failed", "seconds"}``: ``reused`` counts
    labels found in the store, ``computed`` successful new labels, ``failed`` new failures.
    """
    store = Path(store_path) / "labels"
    store.mkdir(parents=True, exist_ok=True)
    todo: list[tuple[str, Conformer]] = []
    seen: set[str] = set()
    reused = 0
    for conf in conformers:
        if not isinstance(conf, Conformer):
            raise InputError(f"label_many takes Conformer objects, got {type(conf).__name__}")
        check_electrons(conf.numbers, conf.charge, conf.multiplicity)
        key = label_key(labeller.level, conf.numbers, conf.positions, conf.charge, conf.multiplicity)
        if key in seen:
            continue
        seen.add(key)
        rec = read_record(store / f"{key}.json")
        if rec is not None and (rec["status"] == "ok" or not retry_failed):
            reused += 1
            continue
        todo.append((key, conf))
    stats = {"total": len(seen), "reused": reused, "computed": 0, "failed": 0}
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=labeller.level, unit="label")

    def finish(key, conf, result):
        write_json_atomic(store / f"{key}.json", _record(labeller, conf, result, key))
        stats["computed" if result["status"] == "ok" else "failed"] += 1
        if bar is not None:
            bar.update(1)

    try:
        if processes <= 1:
            if threads:
                _worker_init(threads)
            for key, conf in todo:
                finish(key, conf, _run_one(labeller, conf))
        elif todo:
            import multiprocessing as mp

            threads = threads or 1
            saved = {v: os.environ.get(v) for v in THREAD_VARIABLES}
            os.environ.update({v: str(threads) for v in THREAD_VARIABLES})
            try:
                with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn"),
                                         initializer=_worker_init, initargs=(threads, os.getpid())) as pool:
                    futures = {pool.submit(_run_one, labeller, conf): (key, conf) for key, conf in todo}
                    for fut in as_completed(futures):
                        key, conf = futures[fut]
                        finish(key, conf, fut.result())
            finally:
                for v, old in saved.items():
                    if old is None:
                        os.environ.pop(v, None)
                    else:
                        os.environ[v] = old
    finally:
        if bar is not None:
            bar.close()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def load_records(store_path, level: str | None = None, status: str | None = "ok") -> list[dict]:
    """All readable records of a store (optionally of one level and status), sorted by key."""
    folder = Path(store_path) / "labels"
    if not folder.is_dir():
        raise InputError(f"{store_path}: not a label store (no labels/ folder)")
    out = []
    for p in sorted(folder.glob("*.json")):
        rec = read_record(p)
        if rec is None:
            continue
        if level is not None and rec["level"] != level:
            continue
        if status is not None and rec["status"] != status:
            continue
        out.append(rec)
    return out


def level_prefix(level: str) -> str:
    """ANI-1x-style dataset prefix of a level: ``wb97x/6-31g*`` -> ``wb97x_dz``,
    ``ccsd(t)/cc-pvdz`` -> ``ccsd(t)_dz``, ``hf/cc-pvtz`` -> ``hf_tz``, ``gfn2-xtb`` -> ``gfn2``.

    As in the ANI-1x release, ``dz`` names 6-31G(d) for DFT and cc-pVDZ for the coupled-cluster
    components; other bases keep their name with ``*`` written ``d``.
    """
    text = level.lower()
    if "/" not in text:
        return text.replace("-xtb", "")
    method, basis = text.split("/", 1)
    short = {"6-31g*": "dz", "6-31g(d)": "dz", "cc-pvdz": "dz", "cc-pvtz": "tz", "cc-pvqz": "qz",
             "def2-tzvpp": "tz"}.get(basis, basis.replace("*", "d").replace("/", "_"))
    return f"{method}_{short}"


def _dataset_names(rec: dict) -> dict[str, object]:
    """``{dataset name: value}`` for one ok record (energies eV, forces eV/Å)."""
    p = level_prefix(rec["level"])
    out: dict[str, object] = {f"{p}.energy": rec["energy"]}
    if rec.get("forces") is not None:
        out[f"{p}.forces"] = np.asarray(rec["forces"])
    ex = rec.get("extras", {})
    if "hf_energy" in ex:
        out[f"hf_{p.split('_', 1)[1]}.energy"] = ex["hf_energy"]
    if "ccsd_correlation" in ex and "triples_correlation" in ex:
        out[f"{p}.corr_energy"] = ex["ccsd_correlation"] + ex["triples_correlation"]
    return out


def collect(store_path, levels: Sequence[str] | None = None) -> dict[str, dict]:
    """Group the store's ok labels by molecule name, joined across levels on the geometry.

    Returns ``{name: {"numbers": [A], "positions": [C, A, 3] Å, "info": [C] dicts,
    "labels": {dataset name: [C] eV or [C, A, 3] eV/Å, NaN where missing}}}``, conformations
    ordered by ``(info["sample"], geometry key)``. Every molecule carries every dataset name
    found in the store (all NaN if a level never reached it).
    """
    recs = sorted(load_records(store_path), key=lambda r: "extras" in r and bool(r["extras"]))
    if levels is not None:
        recs = [r for r in recs if r["level"] in set(levels)]
    geoms: dict[str, dict] = {}
    for r in recs:
        g = geoms.setdefault(r["geometry_key"], {"name": r["name"], "numbers": r["numbers"],
                                                 "positions": r["positions"], "info": r.get("info", {}),
                                                 "labels": {}})
        for k, v in _dataset_names(r).items():
            g["labels"].setdefault(k, v)  # a level's own label wins over another's extras
    out: dict[str, dict] = {}
    for gk, g in sorted(geoms.items(), key=lambda kv: (kv[1]["name"], kv[1]["info"].get("sample", 0), kv[0])):
        m = out.setdefault(g["name"], {"numbers": np.asarray(g["numbers"], np.int64), "geoms": []})
        if not np.array_equal(m["numbers"], g["numbers"]):
            raise InputError(f"molecule {g['name']!r}: conformations with different atoms in one store")
        m["geoms"].append(g)
    names = sorted({k for m in out.values() for g in m["geoms"] for k in g["labels"]})
    for m in out.values():
        a = len(m["numbers"])
        labels = {}
        for k in names:
            shape = (a, 3) if k.endswith(".forces") else ()
            labels[k] = np.stack([np.asarray(g["labels"][k], np.float64) if k in g["labels"]
                                  else np.full(shape, np.nan) for g in m["geoms"]])
        m["positions"] = np.stack([np.asarray(g["positions"], np.float64) for g in m["geoms"]])
        m["info"] = [g["info"] for g in m.pop("geoms")]
        m["labels"] = labels
    return out


def export_ani_h5(store_path, out_path, levels: Sequence[str] | None = None,
                  molecules: Iterable[str] | None = None) -> Path:
    """Write the store's labels in the ANI-1x HDF5 layout, atomically.

    One group per molecule name with ``atomic_numbers [A]`` (uint8), ``coordinates [C, A, 3]``
    (Å), ``<prefix>.energy [C]`` in Hartree and ``<prefix>.forces [C, A, 3]`` in Hartree/Å (the
    public files' units; ``units`` attribute on each dataset), NaN where a level has no label
    for a conformation (as in the ANI-1x release). Group attributes: ``molecule`` (the name),
    ``smiles``, ``split``, ``temperature``, ``seed``, ``sampler`` (from the first conformation's
    ``info``). :func:`phai.data.read_ani_h5` reads it back (in eV), dropping NaN-labelled
    conformations of the requested keys.

    Written by :func:`phai.data.ani_h5.write_ani_h5_arrays`, the ANI writer that takes NaN for
    "not computed" (a store where the expensive level covers only part of the geometries).
    """
    from ..data.ani_h5 import write_ani_h5_arrays

    data = collect(store_path, levels)
    if molecules is not None:
        keep = set(molecules)
        data = {k: v for k, v in data.items() if k in keep}
    if not data:
        raise InputError(f"{store_path}: no finished labels to export")
    groups = {}
    for name, m in data.items():
        info0 = m["info"][0] if m["info"] else {}
        attrs = {"molecule": name, **{k: info0[k] for k in ("smiles", "split", "temperature", "seed", "sampler")
                                      if k in info0}}
        groups[name] = {"numbers": m["numbers"], "positions": m["positions"], "labels": m["labels"], "attrs": attrs}
    return write_ani_h5_arrays(out_path, groups)


def summary(store_path) -> dict:
    """Counts per level and status, failures with reasons, total and mean seconds per level."""
    out: dict[str, dict] = {}
    for r in load_records(store_path, status=None):
        s = out.setdefault(r["level"], {"ok": 0, "failed": 0, "seconds": 0.0, "errors": []})
        s[r["status"]] += 1
        s["seconds"] += float(r.get("seconds", 0.0))
        if r["status"] == "failed":
            s["errors"].append({"name": r["name"], "key": r["key"], "error": r.get("error", "")})
    return out
