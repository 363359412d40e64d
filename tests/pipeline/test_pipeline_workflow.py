"""Workflow-file validation: every mistake gives a message that says what and how to fix."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import test_pipeline_standin as standin  # tests/ is on sys.path (pyproject `pythonpath`)
from laueflow.pipeline.models import cached_model
from laueflow.pipeline.workflow import WorkflowError, load_workflow, parse_workflow
from laueflow.stages.base import StageOverrideWarning, StageSpec, Variable, get_stage, register_stage, unregister_stage

REPO = Path(standin.__file__).parent.parent


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.zarr"
    standin.make_scan_store(path, ny=2, nx=2, rows=16, cols=16, n_spots=1)
    return path


def _wf(scan, **changes):
    data = {"input": str(scan), "output": "out.zarr", "stages": ["test_peaks", "test_angles"]}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_valid_workflow_and_defaults(scan, tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"input": str(scan), "output": "res.zarr", "chunk": [1, 2],
                                    "stages": [{"test_peaks": {"max_peaks": 4}}, "test_angles"]}))
    wf = load_workflow(path)
    assert wf.output == tmp_path / "res.zarr"  # relative to the workflow file
    assert wf.stages[0].params == {"threshold_counts": 200.0, "max_peaks": 4, "delay_s": 0.0, "hold_while_exists": ""}
    assert wf.stage_dim_sizes() == {"peak": 4}
    assert wf.to_dict()["stages"][0] == {"test_peaks": {"threshold_counts": 200.0, "max_peaks": 4,
                                                         "delay_s": 0.0, "hold_while_exists": ""}}
    assert load_workflow(path, output=tmp_path / "other.zarr").output == tmp_path / "other.zarr"


def test_demo_workflow_is_valid():
    wf = load_workflow(REPO / "workflows" / "demo.yaml", check_input=False)
    assert [s.name for s in wf.stages] == ["peaks", "features", "angles", "descriptors", "index", "strain",
                                           "scan_summary", "segmentation", "delegate_map"]
    assert wf.cluster.name == "local.yaml" and wf.cluster.is_file()


@pytest.mark.parametrize("changes, message", [
    ({"stagez": []}, r"unknown key 'stagez' \(did you mean 'stages'\?\)"),
    ({"images_per_task": "8"}, r"'images_per_task' must be an integer"),
    ({"images_per_task": 0}, r"must be ≥ 1"),
    ({"chunk": [1]}, r"'chunk' must be two positive integers"),
    ({"input": "nowhere.zarr"}, r"does not exist; create it with `laueflow ingest"),
    ({"output": None}, r"missing 'output:'.*--output"),
    ({"stages": []}, r"'stages' is missing or empty"),
    ({"stages": ["peeks"]}, r"unknown stage 'peeks' \(did you mean 'peaks'\?\); registered stages:"),
    ({"stages": [{"test_peaks": {"max_peak": 3}}]}, r"unknown parameter 'max_peak' \(did you mean 'max_peaks'\?\)"),
    ({"stages": [{"test_peaks": {"max_peaks": "many"}}]}, r"parameter 'max_peaks' must be int"),
    ({"stages": ["test_angles"]}, r"needs 'peak_col', which no earlier stage produces; add '(test_)?peaks' before it"),
    ({"stages": ["test_peaks", "test_peaks"]}, r"listed twice"),
    ({"stages": ["peaks", "test_peaks"]}, r"already produces"),
    ({"plugins": ["no_such_plugin_module"]}, r"plugin module 'no_such_plugin_module' cannot be imported"),
    ({"stages": [["peaks"]]}, r"stages\[0\] must be a stage name"),
])
def test_validation_errors(scan, changes, message):
    with pytest.raises(WorkflowError, match=message):
        parse_workflow(_wf(scan, **changes))


def test_not_a_scan_store(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(WorkflowError, match="not a laueflow scan store"):
        parse_workflow(_wf(tmp_path / "x.zarr"))


def test_bad_files(tmp_path):
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("input: [unclosed")
    with pytest.raises(WorkflowError, match="not valid YAML"):
        load_workflow(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- peaks")
    with pytest.raises(WorkflowError, match="must be a YAML mapping"):
        load_workflow(tmp_path / "list.yaml")


def test_cli_reports_user_errors(tmp_path, capsys):
    from laueflow.cli.main import main

    (tmp_path / "wf.yaml").write_text("input: nowhere.zarr\noutput: r.zarr\nstages: [peaks]\n")
    assert main(["run", str(tmp_path / "wf.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_registry_plugin_and_model_cache(tmp_path):
    spec = register_stage(StageSpec(
        name="toy_strain", func="numpy:zeros_like",  # lazily resolved reference
        inputs={"a": "peak_col"},
        outputs=(Variable("toy", ("grain", "i3", "j3"), "float32", float("nan"), "1", "toy"),),
        params={"max_grains": 3}, dim_sizes={"grain": "max_grains", "i3": 3, "j3": 3}))
    assert get_stage("toy_strain") is spec
    assert spec.resolved_dim_sizes({"max_grains": 2}) == {"grain": 2, "i3": 3, "j3": 3}
    with pytest.raises(ValueError, match="already registered"):
        register_stage(StageSpec("toy_strain", len, {}, ()))
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        get_stage("nope")
    model = tmp_path / "m.bin"
    model.write_bytes(b"weights-1")
    calls = []

    def loader(path, device):
        calls.append((path, device))
        return Path(path).read_bytes()

    assert cached_model(loader, model) == b"weights-1"
    assert cached_model(loader, model) == b"weights-1"
    assert len(calls) == 1  # loaded once per process and device
    assert cached_model(loader, model, device="cuda") == b"weights-1"
    assert calls[-1][1] == "cuda" and len(calls) == 2
    time.sleep(0.01)
    model.write_bytes(b"weights-2")  # a changed file reloads
    assert cached_model(loader, model) == b"weights-2"
    unregister_stage("toy_strain")
    with pytest.raises(KeyError):
        get_stage("toy_strain")


def test_plugin_overriding_a_builtin_is_told_and_undone():
    builtin = get_stage("angles")
    with pytest.raises(ValueError, match="replace=True"):
        register_stage(replace(builtin, description="mine"))
    with pytest.warns(StageOverrideWarning, match="replaces the built-in stage 'angles'"):
        register_stage(replace(builtin, description="mine"), replace=True)
    assert get_stage("angles").description == "mine"
    unregister_stage("angles")
    assert get_stage("angles") is builtin
