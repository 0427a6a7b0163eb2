"""The GPU benchmark script runs end to end on CPU: rows, the other tools side by side, incremental JSON,
kept traces and the time budget.

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


@pytest.mark.slow
@pytest.mark.patches_torch_for_good  # its peers include torchlens.trace: this test runs last (see conftest)
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
    peers = row["peers"]  # the other tools on the same model and input, over the plain forward
    assert peers["plain_ms"] > 0
    for tool in ("torch.profiler run", "torchinfo.summary", "torchview.draw_graph", "torchlens.trace"):
        assert isinstance(peers[tool], float) and peers[tool] > 0, (tool, peers[tool])
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


@pytest.mark.slow
def test_gpu_session_script_is_one_command_that_leaves_its_results_in_out(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "benchmarks/gpu_session.sh", "--device", "cpu", "--quick", "--only", "transformer",
                           "--no-peers", "--repeat", "1", "--warmup", "0"], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"gpu_profile.json", "gpu_traces.tar.gz", "gpu_profile.log"}
    log = (tmp_path / "gpu_profile.log").read_text()
    assert "torch " in log and "| transformer 4x256 |" in log
