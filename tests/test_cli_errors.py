"""Whatever the command line is pointed at: a right answer or a clear error, and nothing lost.

Each case asserts the exit status, a message that names the problem and the fix, no traceback, and no file
left behind. Output paths are checked before the forward runs: the models here leave a marker file when
their forward runs, so a test can tell.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import textwrap

import pytest
from click.testing import CliRunner
from conftest import requires_dot

from shapetrace import session
from shapetrace.cli import main
from shapetrace.renderers import suffixes


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def no_traceback(result) -> bool:
    return "Traceback" not in result.output and (result.exception is None
                                                 or isinstance(result.exception, SystemExit))


@pytest.fixture
def models(tmp_path):
    """A file of models: ``marked`` leaves ``ran.marker`` when its forward runs; ``raising`` raises in the
    factory; ``no_tensors`` takes no inputs at all."""
    path = tmp_path / "models.py"
    path.write_text(textwrap.dedent(f"""
        import pathlib
        import torch
        from torch import nn

        MARKER = pathlib.Path({str(tmp_path / "ran.marker")!r})

        class Marked(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 2)

            def forward(self, x):
                MARKER.write_text("the forward ran")
                return self.lin(x)

        def marked():
            return Marked()

        def build_layers(depth):
            raise ValueError("the config has no key 'width'")

        def raising():
            return build_layers(3)

        class NoTensors(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 3)

            def forward(self, rows=2):
                return self.lin(torch.ones(rows, 4))

        def scripted():
            return torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))

        def compiled():
            return torch.compile(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))

        class Rows(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 3)

            def forward(self, x):
                for row in x:
                    yield self.lin(row)

        def data_parallel():
            return nn.DataParallel(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))

        def compiled_forward():
            model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(8, 4)).eval()
            model.forward = torch.compile(model.forward, backend="eager")
            return model

        def exported():
            return torch.export.export(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), (torch.randn(2, 4),)).module()

        def exported_child():
            return nn.Sequential(nn.Linear(4, 4), exported())
    """))
    return path


@pytest.mark.parametrize("command,option,suffix", [
    (["trace"], "-o", ".svg"), (["profile", "--warmup", "0", "--repeat", "1"], "-o", ".json"),
    (["profile", "--warmup", "0", "--repeat", "1"], "--plot", ".png"), (["lines"], "-o", ".md"),
    (["lines"], "--save-trace", ".json"), (["diff"], "-o", ".md")])
def test_output_in_a_folder_that_cannot_exist_is_refused_before_the_forward(models, tmp_path, command, option,
                                                                             suffix):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    r = invoke(*command, f"{models}:marked", "--input", "3,4", option, str(blocker / f"out{suffix}"))
    assert r.exit_code == 2, r.output
    assert "is a file, not a folder" in r.output and "choose another path" in r.output
    assert no_traceback(r)
    assert not (tmp_path / "ran.marker").exists()  # refused before the forward ran


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused_before_the_forward(models, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = invoke("trace", f"{models}:marked", "--input", "3,4", "-o", str(locked / "out.json"))
    finally:
        locked.chmod(0o700)
    assert r.exit_code == 2 and "not writable" in r.output and no_traceback(r)
    assert not (tmp_path / "ran.marker").exists()


def test_gallery_build_into_an_unwritable_place_is_refused_before_tracing(tmp_path):
    blocker = tmp_path / "site"
    blocker.write_text("a file where the site should go")
    r = invoke("gallery", "build", "-o", str(blocker), "-e", "emb-sz-rule")
    assert r.exit_code == 2, r.output
    assert "is a file" in r.output and no_traceback(r)
    assert blocker.read_text() == "a file where the site should go"
    r = invoke("gallery", "build", "-o", str(blocker / "inside"), "-e", "emb-sz-rule")
    assert r.exit_code == 2 and "is a file, not a folder" in r.output and no_traceback(r)


def test_a_gallery_build_that_cannot_write_a_file_leaves_no_partial_file(tmp_path, monkeypatch):
    real_replace = os.replace

    def disk_full_for_the_json(src, dst, *args, **kwargs):
        if str(dst).endswith("emb-sz-rule.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full_for_the_json)
    out = tmp_path / "site"
    r = invoke("gallery", "build", "-o", str(out), "-e", "emb-sz-rule", "-j", "1")
    assert r.exit_code == 1, r.output  # the build stops (the next file would not fit either): not a usage error
    assert "emb-sz-rule.json" in r.output and "No space left on device" in r.output and no_traceback(r)
    assert not (out / "emb-sz-rule.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]  # no temporary file left behind


def test_a_suffix_no_renderer_claims_is_refused_with_the_known_ones(models, tmp_path):
    out = tmp_path / "table.xlsx"
    r = invoke("trace", f"{models}:marked", "--input", "3,4", "-o", str(out))
    assert r.exit_code == 2, r.output
    assert "'.xlsx'" in r.output and ".svg" in r.output and ".json" in r.output and ".txt" in r.output
    assert no_traceback(r) and not out.exists()
    assert not (tmp_path / "ran.marker").exists()


@requires_dot
@pytest.mark.parametrize("suffix,magic", [(".jpg", b"\xff\xd8\xff"), (".jpeg", b"\xff\xd8\xff"),
                                          (".gif", b"GIF8"), (".png", b"\x89PNG")])
def test_image_suffixes_graphviz_can_write_are_honoured(tmp_path, suffix, magic):
    out = tmp_path / f"linear{suffix}"
    r = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "--input", "3,4",
               "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(magic)
    assert suffix in suffixes()


def test_inputs_larger_than_memory_are_refused_before_allocating():
    r = invoke("trace", "torch.nn:Identity", "--input", "100000,100000,100000")
    assert r.exit_code == 2, r.output
    assert "PB" in r.output and "--device meta" in r.output and "'100000,100000,100000'" in r.output
    assert no_traceback(r)


def test_the_same_huge_input_traces_on_meta():
    r = invoke("trace", "torch.nn:Identity", "--input", "100000,100000,100000", "--device", "meta")
    assert r.exit_code == 0, r.output
    assert "(100000,100000,100000)" in r.output


@pytest.mark.parametrize("spec,part", [("lnog:4", "'lnog'"), ("3,4:0..x", "'0..x'"), ("x=", "no shape"),
                                       ("float32:3,-4", "'3,-4'"), ("long:1,4:0..1e30", "does not fit int64"),
                                       ("long:1,4:1e400..1e401", "does not fit int64"),
                                       ("0,99999999999999999999", "more elements than a tensor can hold"),
                                       ("4294967296,4294967296,4", "more elements than a tensor can hold")])
def test_a_malformed_input_names_the_bad_part_and_shows_one_example(spec, part):
    r = invoke("trace", "torch.nn:Identity", "--input", spec)
    assert r.exit_code == 2, r.output
    message = r.output.split("Error:", 1)[1]
    assert part in message and "Example: --input" in message
    assert "zeros:long:2,16" not in message and len(message) < 300  # one example, not the whole grammar
    assert no_traceback(r)


def test_a_pickle_is_never_loaded_and_the_message_says_what_to_do(tmp_path):
    marker = tmp_path / "unpickled.marker"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = invoke("trace", "evil.pt")
    finally:
        os.chdir(cwd)
    assert r.exit_code == 2, r.output
    assert "never loads" in r.output and "weights_only=True" in r.output and "build.py:build" in r.output
    assert "evil:pt" not in r.output
    assert not marker.exists() and no_traceback(r)


def test_a_near_miss_suggests_the_torchvision_model_and_the_exhibits():
    r = invoke("trace", "resnet-34")
    assert r.exit_code == 2
    assert "'resnet34' (torchvision)" in r.output and "(an exhibit)" in r.output and no_traceback(r)


def test_a_factory_that_raises_shows_where_and_mentions_debug(models):
    r = invoke("trace", f"{models}:raising", "--input", "3,4")
    assert r.exit_code == 2, r.output
    assert "ValueError: the config has no key 'width'" in r.output
    assert f"{models}:" in r.output and "in build_layers" in r.output and "--debug" in r.output
    line = next(i for i, text in enumerate(models.read_text().splitlines(), 1) if "raise ValueError" in text)
    assert f"{models}:{line}" in r.output
    assert no_traceback(r)
    debug = invoke("trace", f"{models}:raising", "--input", "3,4", "--debug")
    assert debug.exit_code == 2 and "Traceback" in debug.output


def test_without_dot_the_dot_source_lands_next_to_the_output(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out_dir = tmp_path / "out"
    out = out_dir / "linear.svg"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "--input", "3,4",
               "-o", str(out))
    assert r.exit_code == 1, r.output
    assert "Graphviz" in r.output and str(out_dir / "linear.dot") in r.output and no_traceback(r)
    assert (out_dir / "linear.dot").read_text().startswith("digraph")
    assert not out.exists() and list(elsewhere.iterdir()) == []


def test_without_dot_a_dot_file_of_the_users_by_that_name_is_left_alone(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    mine = tmp_path / "linear.dot"
    mine.write_text("my hand-written diagram")
    r = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "--input", "3,4",
               "-o", str(tmp_path / "linear.svg"))
    assert r.exit_code == 1 and str(tmp_path / "linear-1.dot") in r.output
    assert mine.read_text() == "my hand-written diagram"
    assert (tmp_path / "linear-1.dot").read_text().startswith("digraph")


def test_a_failed_render_leaves_the_previous_file_untouched(tmp_path, monkeypatch):
    out = tmp_path / "linear.svg"
    out.write_text("the previous diagram")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    r = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "--input", "3,4",
               "-o", str(out))
    assert r.exit_code == 1
    assert out.read_text() == "the previous diagram"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linear.dot", "linear.svg"]


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    out.write_text("old")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(session.os, "replace", fail)
    with pytest.raises(session.WriteFailed, match="No space left on device"):
        session.write_output("new contents", out)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_a_new_output_gets_the_umask_mode_without_changing_the_umask(tmp_path, monkeypatch):
    old = os.umask(0o077)
    try:
        monkeypatch.setattr(session.os, "umask", lambda mask: pytest.fail("the process umask was changed"))
        session.write_output("contents", tmp_path / "t.txt")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o600


def test_a_forward_that_takes_no_tensors_runs_without_inputs(models):
    r = invoke("trace", f"{models}:NoTensors")
    assert r.exit_code == 0, r.output
    assert "(2,3)" in r.output and no_traceback(r)


def test_a_scripted_module_is_refused_with_what_to_do_instead(models):
    r = invoke("trace", f"{models}:scripted", "--input", "2,4")
    assert r.exit_code == 2, r.output
    assert "TorchScript" in r.output and "before scripting" in r.output and no_traceback(r)


@pytest.mark.parametrize("factory,wrapper", [("compiled", "torch.compile'd"), ("data_parallel", "DataParallel")])
def test_a_wrapped_model_is_traced_inside_its_wrapper_with_a_note(models, factory, wrapper):
    r = invoke("trace", f"{models}:{factory}", "--input", "2,4")
    assert r.exit_code == 0, r.output
    assert "note: the model is" in r.output and wrapper in r.output
    rows = [line.split() for line in r.output.splitlines() if line.strip().startswith(("(root)", "0 ", "1 "))]
    assert [row[:2] for row in rows] == [["(root)", "Sequential"], ["0", "Linear"], ["1", "ReLU"]]
    assert "(2,3)" in r.output and no_traceback(r)


@pytest.mark.parametrize("command", ["trace", "lines"])
def test_a_model_whose_forward_is_compiled_as_a_function_shows_every_layer(models, command):
    r = invoke(command, f"{models}:compiled_forward", "--input", "2,3,16,16")
    assert r.exit_code == 0, r.output
    assert "BatchNorm2d" in r.output and "a bug in shapetrace" not in r.output and no_traceback(r)
    if command == "trace":
        rows = [line.split()[:2] for line in r.output.splitlines() if line.strip()[:1] in "(012345"]
        assert rows[:7] == [["(root)", "Sequential"], ["0", "Conv2d"], ["1", "BatchNorm2d"], ["2", "ReLU"],
                            ["3", "AdaptiveAvgPool2d"], ["4", "Flatten"], ["5", "Linear"]], r.output
    else:  # each layer beside the line of Sequential.forward that called it, none "outside these lines"
        assert "0 Conv2d" in r.output and "5 Linear" in r.output and "outside" not in r.output


@pytest.mark.parametrize("command", [["trace"], ["lines"], ["profile", "--warmup", "0", "--repeat", "1"]])
def test_a_torch_export_program_is_refused_with_what_to_trace_instead(models, command):
    r = invoke(*command, f"{models}:exported", "--input", "2,4")
    assert r.exit_code == 2, r.output
    assert "torch.export program" in r.output and "Trace the nn.Module it was exported from" in r.output
    assert "NotImplementedError" not in r.output and no_traceback(r)


@pytest.mark.parametrize("command", ["trace", "lines", "diff"])
@pytest.mark.parametrize("folder", ["adir", "pkgdir.py"])
def test_a_folder_given_as_model_is_called_a_folder(tmp_path, monkeypatch, command, folder):
    (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path)
    # (adir:build is a namespace package's attribute, as for any module name)
    for spec in [folder] + ([f"{folder}:build"] if folder.endswith(".py") else []):
        r = invoke(command, spec, *(["adir"] if command == "diff" else []))
        assert r.exit_code == 2, r.output
        assert f"{folder!r} is a folder" in r.output and "path/to/file.py:factory" in r.output, r.output
        assert "no such file" not in r.output and "is a file" not in r.output and no_traceback(r)


@pytest.mark.parametrize("text", ["[1, 2, 3]", '{"format": "shapetrace.trace/1", "calls": 5}',
                                  '{"format": "shapetrace.trace/1", "model": {}, "calls": [' + "[" * 5000 + "]" * 5000
                                  + "]}"])
def test_render_of_json_that_is_not_a_trace_is_an_error_in_the_file_status_1(tmp_path, text):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    out = tmp_path / "out.txt"
    r = invoke("render", str(bad), "-o", str(out))
    assert r.exit_code == 1, r.output
    assert "is not a readable shapetrace trace" in r.output and no_traceback(r)
    assert not out.exists()


def test_a_forward_returning_a_generator_says_nothing_ran_and_what_to_do(models, tmp_path):
    out = tmp_path / "rows.json"
    r = invoke("trace", f"{models}:Rows", "--input", "2,4", "-o", str(out))
    assert r.exit_code == 1, r.output
    assert "returned a generator" in r.output and "torch.stack(list(model(x)))" in r.output
    assert no_traceback(r) and not out.exists()


@pytest.fixture
def chatty(tmp_path):
    """A model file that prints at import, in its factory and in its forward, as scripts being debugged do."""
    path = tmp_path / "chatty.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        print("importing chatty")

        class Chatty(nn.Module):
            def __init__(self):
                super().__init__()
                print("building")
                self.lin = nn.Linear(4, 2)

            def forward(self, x):
                print("x:", x.shape)
                return self.lin(x)
    """))
    return path


def test_what_the_model_prints_goes_to_stderr_not_into_the_output_on_stdout(chatty):
    import json

    result = CliRunner().invoke(main, ["trace", f"{chatty}:Chatty", "-i", "1,4", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["calls"][0]["cls"] == "Chatty"
    for said in ("importing chatty", "building", "x: torch.Size([1, 4])"):
        assert said in result.stderr and said not in result.stdout


@pytest.mark.parametrize("where", ["at import", "in the forward"])
def test_a_model_that_calls_sys_exit_is_an_error_that_says_so(tmp_path, where):
    path = tmp_path / "exits.py"
    path.write_text(textwrap.dedent(f"""
        import sys
        import torch
        from torch import nn
        if {where == "at import"}:
            sys.exit(0)  # a training script's argparse, say

        class Exits(nn.Module):
            def forward(self, x):
                sys.exit(3)
    """))
    result = invoke("trace", f"{path}:Exits", "-i", "1,4")
    # as an exception raised there: loading the model is a usage problem (2), the forward a failure (1)
    assert result.exit_code == (2 if where == "at import" else 1) and no_traceback(result)
    code = "0" if where == "at import" else "3"
    assert f"the model's own code exited (SystemExit({code}))" in result.output
    assert "__main__" in result.output


@pytest.mark.parametrize("command", ["trace", "profile"])
@pytest.mark.parametrize("raised", ["GeneratorExit()", "Halt('stop here')"])
def test_a_forward_raising_a_base_exception_is_an_error_that_says_what_to_raise_instead(tmp_path, command, raised):
    path = tmp_path / "halts.py"
    path.write_text(textwrap.dedent(f"""
        from torch import nn

        class Halt(BaseException):
            pass

        class Halts(nn.Module):
            def forward(self, x):
                raise {raised}
    """))
    quick = ["--repeat", "1", "--warmup", "0"] if command == "profile" else []
    result = invoke(command, f"{path}:Halts", "-i", "1,4", *quick)
    assert result.exit_code == 1 and no_traceback(result), result.output
    name = raised.split("(")[0]
    assert f"{name}" in result.output and "was raised in the model's code" in result.output
    assert "raise an Exception (RuntimeError, ValueError, ...) there instead" in result.output


def test_output_through_a_symbolic_link_writes_the_file_it_points_to_and_keeps_the_link(tmp_path):
    target, link = tmp_path / "table.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target.name)
    result = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                    "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and "Total params" in target.read_text()


def test_output_into_a_fifo_is_written_into_it_not_replaced(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                    "-o", str(fifo))
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    if not got:  # the FIFO was replaced by a file: unblock the reader still waiting for a writer
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert fifo.is_fifo() and got and b"Total params" in got[0]


@pytest.mark.parametrize("width", [1, 2])
def test_a_table_narrower_than_any_word_still_prints_every_character(width):
    import torch

    import shapetrace
    from shapetrace.renderers.table import render_text

    text = render_text(shapetrace.trace(torch.nn.Linear(4, 2), torch.randn(1, 4)), width=width)
    assert "Totalparams:10" in "".join(text.split())


@pytest.mark.parametrize("width", ["1", "39", "-1"])
def test_a_width_below_the_tables_minimum_is_a_usage_error(width):
    from shapetrace.renderers.display import MIN_TABLE_WIDTH

    result = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                    "-w", width)
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert f"at least {MIN_TABLE_WIDTH} columns" in result.output and "--width" in result.output


@pytest.mark.parametrize("width", ["40", "0"])
def test_the_tables_minimum_width_and_no_limit_are_accepted(width):
    result = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                    "-w", width)
    assert result.exit_code == 0, result.output
    assert "Total params" in result.stdout


def test_lines_writes_text_to_a_txt_file(tmp_path):
    out = tmp_path / "lines.txt"
    result = invoke("lines", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                    "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "Linear.forward" in out.read_text()


@requires_dot
def test_control_characters_in_an_error_message_keep_the_svg_well_formed(tmp_path):
    import xml.etree.ElementTree as ET

    path = tmp_path / "boom.py"
    path.write_text(textwrap.dedent("""
        from torch import nn

        class Boom(nn.Module):
            def forward(self, x):
                raise ValueError("a\\x1b[31mred\\x00b")

        def build():
            return nn.Sequential(nn.Linear(4, 4), Boom())
    """))
    out = tmp_path / "boom.svg"
    result = invoke("trace", f"{path}:build", "-i", "1,4", "-o", str(out))
    assert result.exit_code == 1 and out.exists()
    ET.parse(out)  # well-formed XML
    assert "\\x1b[31mred\\x00b" in out.read_text()  # the characters shown as escapes


def test_an_unknown_overlay_is_a_usage_error_before_the_forward(models, tmp_path):
    r = invoke("trace", f"{models}:marked", "--input", "3,4", "--overlay", "heta", "-o", str(tmp_path / "m.svg"))
    assert r.exit_code == 2 and "'heta' is not one of" in r.output and "heat" in r.output
    assert not (tmp_path / "ran.marker").exists()


def test_a_warning_is_one_line_on_stderr_with_no_source_line(tmp_path):
    path = tmp_path / "wide.py"
    path.write_text("from torch import nn\n\ndef build():\n    return nn.Sequential(*[nn.Linear(2, 2) for _ in range(520)])\n")
    r = invoke("trace", f"{path}:build", "-i", "1,2", "-f", "dot")
    assert r.exit_code == 0
    lines = [ln for ln in r.stderr.splitlines() if "500" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: the diagram has")
    assert "UserWarning" not in r.stderr and ".py:" not in r.stderr


def test_a_format_that_disagrees_with_an_image_suffix_is_written_with_a_note(tmp_path):
    out = tmp_path / "net.png"
    r = invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
               "-f", "svg", "-o", str(out))
    assert r.exit_code == 0 and "note: writing svg into net.png, whose suffix says png" in r.stderr
    assert out.read_text().lstrip().startswith("<?xml")


def test_profile_refuses_one_file_for_both_the_plot_and_the_output(tmp_path):
    out = tmp_path / "p.svg"
    r = invoke("profile", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
               "--plot", str(out), "-o", str(out))
    assert r.exit_code == 2 and "one would overwrite the other" in r.output and not out.exists()


def test_render_heat_time_of_a_trace_without_times_is_a_usage_error(tmp_path):
    saved, out = tmp_path / "lin.json", tmp_path / "lin.svg"
    assert invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                  "-o", str(saved)).exit_code == 0
    r = invoke("render", str(saved), "--heat", "time", "-o", str(out))
    assert r.exit_code == 2 and "this trace has no timings" in r.output and not out.exists()
    assert "records shapes only" in r.output and "--heat activations" in r.output


def test_render_heat_time_of_a_meta_device_profile_says_the_meta_device_is_never_timed(tmp_path):
    import torch  # the profile is made here, rendered by the CLI

    import shapetrace

    saved, out = tmp_path / "meta.json", tmp_path / "meta.svg"
    saved.write_text(shapetrace.profile(torch.nn.Linear(4, 2), torch.randn(1, 4), device="meta").to_json())
    r = invoke("render", str(saved), "--heat", "time", "-o", str(out))
    assert r.exit_code == 2 and "it ran on device 'meta'" in r.output and not out.exists()
    assert "render a profile saved with" not in r.output


def test_a_model_file_that_does_not_parse_names_its_own_line(tmp_path):
    path = tmp_path / "broken_syntax.py"
    path.write_text("import torch\n\ndef build(:\n    pass\n")
    r = invoke("trace", f"{path}:build", "-i", "1,4")
    assert r.exit_code == 2 and no_traceback(r)
    assert f"{path}:3" in r.output and "frozen" not in r.output


@pytest.mark.parametrize("hints,named", [(5, "meta.options) must be an object"), ({"fold": 5}, "meta.options.fold"),
                                         ({"depth": "x"}, "meta.options.depth")])
def test_broken_render_hints_in_a_hand_edited_trace_are_named(tmp_path, hints, named):
    saved = _linear_with_hints(tmp_path, hints)
    r = invoke("render", str(saved), "-f", "dot")
    assert r.exit_code == 1 and named in r.output and "fix or remove" in r.output and no_traceback(r)


def _linear_with_hints(tmp_path, hints):
    import json

    saved = tmp_path / "lin.json"
    assert invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                  "-o", str(saved)).exit_code == 0
    data = json.loads(saved.read_text())
    data["meta"]["options"] = hints
    saved.write_text(json.dumps(data))
    return saved


@pytest.mark.parametrize("hints,named", [
    ({"overlays": ["cut"]}, "meta.options.overlays asks for the 'cut' overlay, but meta.options holds no 'cut'"),
    ({"layout": "bogus"}, "meta.options.layout must be one of tb, lr, u, got 'bogus'"),
    ({"style": "fancy"}, "meta.options.style must be one of compact, detailed"),
    ({"heat": "warmth"}, "meta.options) cannot be drawn: options['heat'] must be one of"),
    ({"overlays": ["glow"]}, "meta.options) cannot be drawn: unknown overlay 'glow'"),
])
def test_saved_render_hints_the_diagram_cannot_draw_are_blamed_on_the_file(tmp_path, hints, named):
    r = invoke("render", str(_linear_with_hints(tmp_path, hints)), "-f", "dot")
    assert r.exit_code == 1 and named in r.output and "fix or remove" in r.output and no_traceback(r)
    assert "--overlay" not in r.output and "Try '" not in r.output  # no usage banner: the command line is fine


def test_an_html_page_without_the_diagram_ignores_broken_diagram_hints(tmp_path):
    saved = _linear_with_hints(tmp_path, {"depth": -1, "layout": "bogus"})
    r = invoke("render", str(saved), "-f", "html", "-o", str(tmp_path / "t.html"))
    assert r.exit_code == 0, r.output
    r = invoke("render", str(saved), "-f", "html", "--with-diagram", "-o", str(tmp_path / "d.html"))
    assert r.exit_code == 1 and "meta.options.depth" in r.output


@requires_dot
@pytest.mark.parametrize(("overlay", "says"), [("cut", "nn.Sequential(body, head)"), ("groups", "--overlay frozen")])
def test_an_overlay_the_model_has_no_data_for_is_a_usage_error_in_command_line_terms(tmp_path, overlay, says):
    out = tmp_path / "d.svg"
    result = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg",
                                       "out_features=2", "-i", "2,4", "--overlay", overlay, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert f"--overlay {overlay} needs" in result.output and says in result.output
    assert "options={" not in result.output.split("From Python")[0]  # Python's way comes last, named as such
    assert not out.exists()


@requires_dot
def test_the_diff_overlay_outside_shapetrace_diff_is_a_usage_error_naming_it(tmp_path):
    result = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg",
                                       "out_features=2", "-i", "2,4", "--overlay", "diff", "-f", "dot"])
    assert result.exit_code == 2 and "shapetrace diff A B" in result.output


@pytest.mark.parametrize("other", ["sub/../same.json", "link.json"])
def test_lines_refuses_one_file_for_both_the_saved_trace_and_the_output(models, tmp_path, other):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.json").symlink_to("same.json")
    r = invoke("lines", f"{models}:marked", "--input", "3,4", "--save-trace", str(tmp_path / "same.json"),
               "-o", str(tmp_path / other))
    assert r.exit_code == 2, r.output
    assert "--save-trace and -o both name" in r.output and "one would overwrite the other" in r.output
    assert not (tmp_path / "same.json").exists() and not (tmp_path / "ran.marker").exists()


@pytest.mark.parametrize("command,fmt,name,implied", [
    (["trace"], "md", "table.svg", "svg"), (["trace"], "json", "page.html", "html"),
    (["diff"], "md", "changes.svg", "svg"), (["lines"], "md", "lines.html", "html")])
def test_a_text_format_that_disagrees_with_the_suffix_is_written_with_a_note(tmp_path, command, fmt, name, implied):
    out = tmp_path / name
    r = invoke(*command, "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
               "-f", fmt, "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"note: writing {fmt} into {name}, whose suffix says {implied}" in r.stderr
    assert out.exists()


@pytest.mark.parametrize("command", [["render", "{t}", "-f", "html"], ["diff", "{t}", "{t}", "-f", "md"]])
def test_an_output_refused_as_the_input_gets_the_refusal_alone_without_a_suffix_note(tmp_path, command):
    saved = tmp_path / "lin.json"
    assert invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                  "-o", str(saved)).exit_code == 0
    before = saved.read_bytes()
    r = invoke(*[a.format(t=saved) for a in command], "-o", str(saved))
    assert r.exit_code == 2 and "is the input file" in r.stderr, r.output
    assert "note:" not in r.stderr  # nothing is written into it, so there is nothing to note about its suffix
    assert saved.read_bytes() == before


def test_the_note_on_one_diagram_only_option_reads_affects(tmp_path):
    saved = tmp_path / "lin.json"
    assert invoke("trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2", "-i", "1,4",
                  "-o", str(saved)).exit_code == 0
    r = invoke("render", str(saved), "--heat", "activations", "-f", "md")
    assert r.exit_code == 0 and "note: --heat only affects diagram formats" in r.stderr, r.output


def test_messages_name_the_object_missing_the_attribute_and_suggest_cuda_for_gpu(models):
    missing = invoke("trace", f"{models}:marked.nope", "--input", "3,4")
    assert missing.exit_code == 2 and f"'{models}:marked' has no attribute 'nope'" in missing.output, missing.output
    for command in (["trace"], ["profile"]):
        gpu = invoke(*command, f"{models}:marked", "--input", "3,4", "--device", "gpu")
        assert gpu.exit_code == 2 and "Did you mean 'cuda'?" in gpu.output, gpu.output


@pytest.mark.parametrize("command", [["lines", "torch.nn:Identity"], ["diff", "torch.nn:Identity", "torch.nn:Identity"],
                                     ["profile", "torch.nn:Identity"]], ids=["lines", "diff", "profile"])
def test_inputs_larger_than_memory_get_no_advice_of_an_option_the_command_lacks(command):
    # lines and diff have no --device; profile times real tensors and refuses --device meta
    r = invoke(*command, "--input", "100000,100000,100000")
    assert r.exit_code == 2, r.output
    assert "PB" in r.output and "give a smaller input" in r.output.lower() and "meta" not in r.output


LONG = "x" * 300  # longer than a file name can be (255 bytes on common file systems)


@pytest.mark.parametrize(("args", "said"), [
    (["trace", LONG], "unknown model"),
    (["trace", f"{LONG}.py:build"], "cannot read"),
    (["trace", "torch.nn:Identity", "--input", "2", "-o", f"{LONG}.txt"], "cannot write"),
    (["trace", "torch.nn:Identity", "--input", "2", "-o", f"missing/{LONG}.txt"], "cannot write"),
    (["profile", "torch.nn:Identity", "--input", "2", "--plot", f"{LONG}.svg"], "cannot write"),
], ids=["MODEL", "MODEL file", "-o", "-o in a missing folder", "--plot"])
def test_a_path_with_a_name_too_long_is_a_usage_error_not_an_oserror(tmp_path, monkeypatch, args, said):
    monkeypatch.chdir(tmp_path)
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert said in r.output and "Errno" not in r.output and no_traceback(r)


def test_a_saved_trace_given_to_trace_points_to_render(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("trace", "x.json")
    assert r.exit_code == 2 and "shapetrace render x.json" in r.output and "x:json" not in r.output


def test_a_factory_returning_an_int_is_said_with_the_right_article(tmp_path):
    (tmp_path / "number.py").write_text("def build():\n    return 3\n")
    r = invoke("trace", f"{tmp_path / 'number.py'}:build")
    assert r.exit_code == 2 and "returned an int, not an nn.Module" in r.output


def test_a_factory_calling_sys_exit_is_told_about_factories_not_imports(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\n\ndef build():\n    sys.exit('bye')\n")
    r = invoke("trace", f"{tmp_path / 'quits.py'}:build")
    assert r.exit_code == 2 and no_traceback(r)
    assert "It was its factory" in r.output and "__main__" not in r.output


def test_self_as_an_input_keyword_is_a_bad_input_not_a_forward_failure():
    r = invoke("trace", "torch.nn:Identity", "--input", "self=1,4")
    assert r.exit_code == 2 and "bad --input 'self=1,4'" in r.output


def test_a_plot_that_is_the_model_file_suggests_a_plot_name(tmp_path):
    model = tmp_path / "m.py"
    model.write_text("from torch import nn\n\ndef build():\n    return nn.Identity()\n")
    (tmp_path / "p.svg").symlink_to(model)
    r = invoke("profile", f"{model}:build", "--input", "2", "--plot", str(tmp_path / "p.svg"))
    assert r.exit_code == 2 and "(e.g. plot.svg)" in r.output


def test_a_torch_export_program_inside_the_model_is_refused_naming_it(models):
    r = invoke("trace", f"{models}:exported_child", "--input", "2,4")
    assert r.exit_code == 2, r.output
    assert "whose submodule '1' is a torch.export program" in r.output and "in its place" in r.output
    assert "NotImplementedError" not in r.output and no_traceback(r)
