"""The notebooks run headless from top to bottom (nbclient, a real kernel), outputs cleared in git:
01-quickstart on a 2 × 3 scan with peaks and angles only, 02-explore-results on a store of known
contents (tests/results_factory.py), 03-train-models with a small indexer for a material from a
materials file, 04-cluster on a LocalCluster of 2 workers and on a running scheduler (its address),
05-segmentation on a 3 × 5 scan. A cell that raises fails the test."""
from __future__ import annotations

import os
import re
from contextlib import ExitStack
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from laueflow.pipeline.cluster import ClusterConfig, connect

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, parameters: str, cwd: Path, timeout_s: int = 300):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("# parameters")]
    cell.source = "# parameters\n" + parameters
    # the kernel inherits the environment (PYTHONPATH) but not MPLBACKEND: its inline backend renders
    # figures as image/png, as in Jupyter
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return notebook


def _outputs(notebook, kind):
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_outputs_are_cleared_in_git(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in notebook.cells if c.cell_type == "code")


def _images(notebook):
    return [o for o in _outputs(notebook, "display_data") + _outputs(notebook, "execute_result")
            if "image/png" in o.get("data", {})]


def _texts(notebook) -> str:
    return "".join(o.get("text", "") for o in _outputs(notebook, "stream"))


def test_notebooks_folder_holds_the_five_notebooks():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01-quickstart.ipynb", "02-explore-results.ipynb", "03-train-models.ipynb", "04-cluster.ipynb",
        "05-segmentation.ipynb"]


def test_quickstart_runs(tmp_path):
    notebook = _execute("01-quickstart.ipynb", 'from pathlib import Path\nWORK = Path("qs")\nSHAPE = (2, 3)\n'
                        'MATERIAL = "Cu"\nFULL_WORKFLOW = False', tmp_path)
    assert (tmp_path / "qs" / "results.zarr" / "zarr.json").is_file()
    texts = "".join(o.get("text", "") for o in _outputs(notebook, "stream"))
    assert "complete: True" in texts
    assert len([o for o in _outputs(notebook, "display_data") + _outputs(notebook, "execute_result")
                if "image/png" in o.get("data", {})]) >= 2  # the status and peak count maps


def test_explore_results_runs(results_store, tmp_path):
    path, _ = results_store
    notebook = _execute("02-explore-results.ipynb", f'RESULTS = "{path}"\nFRAME = "sample"', tmp_path)
    images = [o for o in _outputs(notebook, "display_data") + _outputs(notebook, "execute_result")
              if "image/png" in o.get("data", {})]
    assert len(images) >= 17  # every map of the store, segmentation included


def test_segmentation_runs(tmp_path):
    notebook = _execute("05-segmentation.ipynb", 'from pathlib import Path\nWORK = Path("seg")\nSHAPE = (3, 5)\n'
                        'GRAINS = 2\nMATERIAL = "Cu"\nK_MAX = 5\nK_AGAIN = 4\nPCS = 8\nRESULTS = None', tmp_path)
    store = tmp_path / "seg" / "results.zarr"
    assert (store / "zarr.json").is_file() and (store / "segmentations" / "k4-pcs8-kmeans" / "zarr.json").is_file()
    texts = _texts(notebook)
    assert "complete: True" in texts and "segmentations/k4-pcs8-kmeans: K = 4, 8 PCs, kmeans" in texts
    suggested = int(re.search(r"suggested K: (\d+)", texts).group(1))
    assert f"root: K = {suggested} | new group: K = 4" in texts  # both segmentations kept
    assert len(_images(notebook)) == 5  # clusters, PCA labeler, direct coloring, scores, both segmentations


def test_train_models_runs(tmp_path):
    notebook = _execute("03-train-models.ipynb", 'from pathlib import Path\nWORK = Path("train")\n'
                        'MATERIAL_YAML = """\\\nPd:\n  lattice: [3.8907, 3.8907, 3.8907, 90, 90, 90]\n'
                        '  space_group: "F m -3 m"\n  atoms: [[Pd, 0, 0, 0]]\n  lauetools_extinction: fcc\n"""\n'
                        'MAX_GRAINS = 2\nEPOCHS = 20\nN_TEST_PATTERNS = 3', tmp_path)
    assert len(list((tmp_path / "train" / "models").glob("lauenn-Pd-*.pt"))) == 1
    texts = _texts(notebook)
    assert "materials: ['Pd']" in texts
    accuracy = float(re.search(r"validation accuracy: ([\d.]+) % \(\d+ classes\)", texts).group(1))
    assert accuracy > 95.0
    assert "grains found within 0.1°: 3 / 3, spurious: 0, hkl accuracy: 100.0 %" in texts
    assert len(_images(notebook)) >= 1


@pytest.mark.parametrize("external", [False, True], ids=["local-cluster", "running-scheduler"])
def test_cluster_runs(tmp_path, external):
    """Without SCHEDULER the notebook starts a LocalCluster of 2 workers; with the address of a
    running scheduler (here one started by the test, as a SLURM job's would be) it connects to it."""
    with ExitStack() as stack:
        scheduler = "None"
        if external:
            client = stack.enter_context(connect(ClusterConfig("local", {
                "n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"})))
            scheduler = repr(client.scheduler.address)
        notebook = _execute("04-cluster.ipynb", f'from pathlib import Path\nWORK = Path("cl")\nSCHEDULER = {scheduler}\n'
                            'N_WORKERS = 2\nSHAPE = (2, 3)\nMATERIAL = "Cu"', tmp_path)
    assert (tmp_path / "cl" / "results.zarr" / "zarr.json").is_file()
    texts = _texts(notebook)
    assert re.search(r"dashboard: http://[\d.]+:\d+/status", texts) and "workers: 2 | threads: 2" in texts
    if external:
        assert f"scheduler: {scheduler[1:-1]}" in texts
    assert re.search(r"complete: True \| 2 tiles, 6 images in [\d.]+ s", texts)
    assert re.search(r"  peaks[^:]*: [\d.]+ s", texts)
    assert len(_images(notebook)) == 1  # the timings
