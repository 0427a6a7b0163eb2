"""The command line: exit codes 0/1/2, failing-layer messages, suggestions, JSON and -o files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import requires_dot

import shapetrace
from shapetrace.cli import main

# a child Python imports this tree's src, never an installed copy
SRC_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
LINEAR = ["torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "--input", "3,4"]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def broken_file(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent("""
        from torch import nn

        def build():
            return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2))
    """))
    return path


def test_trace_prints_the_table_and_exits_0():
    r = run("trace", "resnet18", "--input", "1,3,64,64", "--depth", "1")
    assert r.exit_code == 0, r.output
    assert "layer4" in r.output and "(1,512,2,2)" in r.output and "Total params:" in r.output


def test_json_output_is_exactly_the_trace_and_reloads(tmp_path):
    out = tmp_path / "lin.json"
    r = run("trace", *LINEAR, "--format", "json", "-o", str(out))
    assert r.exit_code == 0, r.output
    tr = shapetrace.load(str(out))
    assert out.read_text() == tr.to_json()
    assert tr.calls[0].cls == "Linear" and tr.calls[0].outputs.shape == (3, 2)


def test_format_follows_the_output_suffix(tmp_path):
    out = tmp_path / "lin.md"
    assert run("trace", *LINEAR, "-o", str(out)).exit_code == 0
    assert out.read_text().startswith("| layer | class |")


def test_failing_forward_exits_1_with_partial_table_and_failing_layer(broken_file):
    r = CliRunner().invoke(main, ["trace", f"{broken_file}:build", "--input", "3,4"])
    assert r.exit_code == 1
    assert "✗ 2" in r.stdout and "(3,8)" in r.stdout  # the partial table, the completed calls' shapes
    assert "the forward failed in 2 (Linear)" in r.stderr
    assert "(3, 8)" in r.stderr and "RuntimeError" in r.stderr  # its input and the error
    assert "Traceback" not in r.output


def test_a_diff_where_a_forward_fails_shows_what_ran_and_exits_1(broken_file):
    r = CliRunner().invoke(main, ["diff", f"{broken_file}:build", f"{broken_file}:build", "--input", "3,4"])
    assert r.exit_code == 1
    assert "the forward of" in r.stderr and "failed" in r.stderr
    assert "Traceback" not in r.output


def test_debug_shows_the_traceback(broken_file):
    r = CliRunner().invoke(main, ["trace", f"{broken_file}:build", "--input", "3,4", "--debug"])
    assert r.exit_code == 1 and "Traceback" in r.stderr


@pytest.mark.parametrize("args,expect", [
    (["trace", "resnet18", "--input", "lnog:4"], "did you mean 'long'"),
    (["trace", "tabular-modle"], "Did you mean 'tabular-model'"),
    (["trace", "no_such_pkg.mod:build"], "cannot import module 'no_such_pkg.mod'"),
    (["trace", "torch.nn:Linear", "--arg", "in_features=4"], "--arg"),
    (["trace", "resnet18", "--format", "svgg"], "Did you mean 'svg'"),
    (["trace", "resnet18", "--dpeth", "2"], "(Did you mean one of: '--depth'"),
    (["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2"], "no default inputs"),
])
def test_usage_errors_exit_2_and_say_what_to_fix(args, expect):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert expect in r.output
    assert "Traceback" not in r.output


def test_render_a_saved_trace(tmp_path):
    saved = tmp_path / "lin.json"
    assert run("trace", *LINEAR, "--format", "json", "-o", str(saved)).exit_code == 0
    r = run("render", str(saved), "--format", "html")
    assert r.exit_code == 0 and '<table class="shapetrace">' in r.output
    r = run("render", str(saved))
    assert r.exit_code == 0 and "Linear" in r.output


def test_render_refuses_a_file_that_is_not_a_trace(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something/else"}')
    r = CliRunner().invoke(main, ["render", str(bad)])
    assert r.exit_code == 1 and "not a readable shapetrace trace" in r.output and "Usage:" not in r.output


def test_render_runs_without_torch(tmp_path):
    saved = tmp_path / "lin.json"
    assert run("trace", *LINEAR, "--format", "json", "-o", str(saved)).exit_code == 0
    code = ("import sys; sys.modules['torch'] = None\n"
            "from shapetrace.cli import main\n"
            f"main(['render', {str(saved)!r}, '--format', 'md'])")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env=SRC_ENV)
    assert done.returncode == 0, done.stderr
    assert "`(root)`" in done.stdout and "Linear" in done.stdout


def test_module_view_option():
    r = run("trace", *LINEAR, "--view", "modules")
    assert r.exit_code == 0 and "calls" in r.output and "×1" in r.output


def test_help_shows_examples():
    r = run("trace", "--help")
    assert r.exit_code == 0
    assert "shapetrace trace resnet18 --input 1,3,224,224" in r.output and "long:8,5:0..100" in r.output


def test_gallery_list_names_the_exhibits():
    r = run("gallery", "list")
    assert r.exit_code == 0 and "tabular-model" in r.output


def test_diagram_format_writes_a_dot_file(tmp_path):
    out = tmp_path / "lin.dot"
    r = run("trace", *LINEAR, "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "digraph" in out.read_text()


def run_at_once(*commands: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands side by side (each ``python -m shapetrace`` spends seconds importing torch) and return
    their results in order; all are killed when one outlives the timeout."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=SRC_ENV)
             for c in commands]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
        return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_python_dash_m_runs_the_cli(tmp_path):
    done, bad = run_at_once([sys.executable, "-m", "shapetrace", "trace", *LINEAR, "--format", "csv"],
                            [sys.executable, "-m", "shapetrace", "trace", "resnt18"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("layer,depth,class")
    assert bad.returncode == 2 and "Did you mean 'resnet18'" in bad.stderr and "Traceback" not in bad.stderr


@requires_dot
def test_a_saved_exhibit_trace_re_renders_the_same_diagram(tmp_path):
    """The exhibit's render hints (here its parameter-group overlay) travel in the JSON."""
    saved, again, direct = tmp_path / "t.json", tmp_path / "a.svg", tmp_path / "b.svg"
    assert run("trace", "tabular-model", "--format", "json", "-o", str(saved)).exit_code == 0
    assert run("render", str(saved), "-o", str(again)).exit_code == 0
    assert run("trace", "tabular-model", "-o", str(direct)).exit_code == 0
    assert again.read_bytes() == direct.read_bytes()
    assert shapetrace.load(str(saved)).meta["options"]["overlays"] == ["groups"]
    assert "embeddings" in again.read_text()  # the groups overlay's legend, from the saved hints


def test_format_choices_and_suffixes_come_from_the_renderer_registry():
    from shapetrace.renderers import formats, register

    assert set(formats()) >= {"text", "md", "html", "csv", "json", "svg", "png", "pdf", "dot"}
    r = run("trace", "--help")
    assert all(name in r.output for name in formats())

    with pytest.raises(ValueError, match="already claimed"):
        register("svg2", suffixes=(".svg",))(lambda trace, options: "")


def test_one_model_diff_refuses_the_per_side_factory_arguments():
    r = CliRunner().invoke(main, ["diff", "torch.nn:Linear", "--a-arg", "in_features=4", "--input", "1,4"])
    assert r.exit_code == 2 and "with one MODEL use --arg" in r.output


SIDE_INPUT_MODEL = '''
import torch
from torch import nn

class Keep(nn.Module):
    def __init__(self, store):
        super().__init__()
        self.store = store

    def forward(self, x):
        self.store.append(x)
        return x * 2

class Merge(nn.Module):
    """Reads a tensor it was not passed (as fastai's MergeLayer reads the U-Net's input), through torch.cat."""

    def __init__(self, store):
        super().__init__()
        self.store = store

    def forward(self, x):
        return torch.cat([x, self.store[0]], 1)

def build():
    store = []
    return nn.Sequential(Keep(store), nn.ReLU(), Merge(store))
'''


def test_a_table_is_the_same_traced_directly_or_rendered_from_the_saved_trace(tmp_path):
    (tmp_path / "side.py").write_text(SIDE_INPUT_MODEL)
    spec, runner = f"{tmp_path / 'side.py'}:build", CliRunner()
    saved = tmp_path / "t.json"
    assert runner.invoke(main, ["trace", spec, "-i", "2,3", "-o", str(saved)]).exit_code == 0
    for fmt in ("text", "md", "csv"):
        direct = runner.invoke(main, ["trace", spec, "-i", "2,3", "-f", fmt])
        rendered = runner.invoke(main, ["render", str(saved), "-f", fmt])
        assert direct.exit_code == 0 and direct.output == rendered.output, fmt
    assert "+side" in runner.invoke(main, ["trace", spec, "-i", "2,3"]).output  # Merge's read of Keep's input


# One subprocess each (about 6 s where it imports torch): two in `make test`, all four in `make test-all`.
@pytest.mark.parametrize("command", [["trace", *LINEAR],
                                     pytest.param(["trace", *LINEAR, "-o", "/dev/stdout"], marks=pytest.mark.slow),
                                     pytest.param(["gallery", "list"], marks=pytest.mark.slow),
                                     ["--help"]])
def test_a_closed_stdout_ends_quietly_with_the_status_a_shell_gives_sigpipe(command):
    read, write = os.pipe()
    os.close(read)  # the reader went away (`shapetrace ... | head -1`, once head has its line)
    try:
        done = subprocess.run([sys.executable, "-m", "shapetrace", *command], stdout=write, stderr=subprocess.PIPE,
                              env=SRC_ENV, text=True, timeout=300, check=False)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""


def test_choices_such_as_the_format_are_taken_in_any_case():
    r = run("trace", *LINEAR, "--format", "MD", "--view", "Modules")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("| layer |")
