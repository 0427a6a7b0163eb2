"""The GPU benchmark script runs end to end on CPU: rows, incremental JSON, kept traces and the time budget.

The GPU machine is lent rarely and briefly, so the script it runs must not fail there for a reason a CPU
run could have shown.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import pytest

import shapetrace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_profile():
    spec = importlib.util.spec_from_file_location("gpu_profile", ROOT / "benchmarks" / "gpu_profile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_profile"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_profile", None)


def test_gpu_profile_script_writes_rows_and_the_traces_it_measured(gpu_profile, tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    out, traces = tmp_path / "rows.json", tmp_path / "traces.tar.gz"
    rc = gpu_profile.main(["--device", "cpu", "--quick", "--only", "transformer", "--warmup", "0", "--repeat", "2",
                           "--json", str(out), "--traces", str(traces)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["torch"]
    [row] = data["rows"]
    assert row["model"].startswith("transformer") and row["kind"] == "cpu-wall"
    assert row["attributed_vs_reference"] == pytest.approx(1.0, abs=1e-3)  # self times add up to the root
    assert row["uncalled"] > 0  # the fused fast path: the layers' submodules never run
    with tarfile.open(traces) as tar:
        [member] = tar.getmembers()
        trace = shapetrace.Trace.from_json(tar.extractfile(member).read().decode())
    assert trace.timing["attributed_ms"] == pytest.approx(row["attributed_ms"])


def test_gpu_profile_script_skips_cases_once_the_budget_is_spent(gpu_profile, tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "rows.json"
    rc = gpu_profile.main(["--device", "cpu", "--quick", "--only", "resnet34", "--budget-s", "0", "--json", str(out)])
    assert rc == 1  # a skipped case is not a success
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["error"].startswith("skipped") for r in rows)
