"""Every notebook in notebooks/ executes without error, and is stored without outputs.

Kernel choice: the notebooks run in an IPython kernel of *this* interpreter (``sys.executable``),
so they see the same phai, JAX and ASE as the tests. ``jupyter_client`` resolves the kernel name
``"python3"`` through the Jupyter data path; in a venv with ipykernel installed that is the venv's
own spec (``argv[0] == "python"``, which jupyter_client replaces by ``sys.executable``), but a
``python3`` spec in a user or system directory can point to another Python. So the test does not
rely on the installed specs: it writes ipykernel's native spec for ``sys.executable`` into a
temporary directory, under the name ``python3``, and gives nbclient a kernel manager that looks
only there. ``test_kernel_runs_this_python`` checks the result.

Kernel environment: a copy of ``os.environ`` with ``MPLBACKEND=Agg`` (no display in CI; the
notebooks themselves use ``%matplotlib inline``) and with the folder phai was imported from put
first on ``PYTHONPATH`` as an absolute path, because the kernel runs in the notebook's folder, where
a relative ``PYTHONPATH=src`` would point nowhere. Relative ``PHAI_CACHE``/``PHAI_WHEELHOUSE`` are
made absolute for the same reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (test extras: a missing one must fail, not skip)
import matplotlib  # noqa: F401
import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell


def _kernel_env() -> dict[str, str]:
    import phai

    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    package_root = str(Path(phai.__file__).resolve().parent.parent)
    paths = [package_root] + [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    for var in ("PHAI_CACHE", "PHAI_WHEELHOUSE"):
        if env.get(var):
            env[var] = str(Path(env[var]).expanduser().resolve())
    return env


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec directory holding one spec, ``python3``, that runs ``sys.executable``."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(root / "python3")
    return root


def _run(nb, folder: Path, kernel_dir: Path, tmpdir: Path | None = None):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    assert ksm.get_kernel_spec("python3").argv[0] == sys.executable
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    client = nbclient.NotebookClient(nb, km=km, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     resources={"metadata": {"path": str(folder)}})
    env = _kernel_env()
    if tmpdir is not None:      # the kernel's temporary files (tempfile, TMPDIR) go there
        env["TMPDIR"] = str(tmpdir)
    client.execute(env=env)  # env and cwd (from resources) go to the kernel's start
    return nb


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_kernel_runs_this_python(kernel_dir, tmp_path):
    cell = nbformat.v4.new_code_cell(
        "import os, sys, phai, matplotlib\n"
        "print(sys.executable); print(os.getcwd()); print(phai.__file__); print(matplotlib.get_backend())")
    nb = _run(nbformat.v4.new_notebook(cells=[cell]), tmp_path, kernel_dir)
    executable, cwd, phai_file, backend = nb.cells[0].outputs[0]["text"].split("\n")[:4]
    import phai

    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(cwd).resolve() == tmp_path.resolve()
    assert Path(phai_file).resolve() == Path(phai.__file__).resolve()
    assert backend.lower() == "agg"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [k for k, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; clear them with "
                       f"`jupyter nbconvert --clear-output --inplace {path.name}` before committing")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, kernel_dir, tmp_path):
    nb = nbformat.read(path, as_version=4)
    before = set(path.parent.rglob("*"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    try:
        _run(nb, path.parent, kernel_dir, scratch)
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {[(e['ename'], e['evalue']) for e in errors]}"
    # a notebook run in the repository leaves nothing behind, there or in the temporary folder
    left = sorted(str(p.relative_to(path.parent)) for p in set(path.parent.rglob("*")) - before
                  if ".ipynb_checkpoints" not in p.parts)
    assert not left, f"{path.name} left files in {path.parent}: {left}"
    assert not list(scratch.iterdir()), f"{path.name} left temporary files: {list(scratch.iterdir())}"
