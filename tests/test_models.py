"""Model specs: exhibits, package.module:attr, file.py:attr, torchvision names, --arg parsing, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shapetrace.cli import main
from shapetrace.specs.models import ModelSpecError, load_model, load_model_and_inputs, parse_arg, parse_args
from shapetrace.specs.names import split_spec


def test_exhibit_name_gives_the_model_and_its_inputs():
    loaded = load_model("tabular-model")
    assert loaded.exhibit is not None and loaded.exhibit.name == "tabular-model"
    args, kwargs = loaded.inputs
    loaded.module(*args, **kwargs)


def test_misspelt_exhibit_suggests_the_closest_name():
    with pytest.raises(ModelSpecError, match="Did you mean 'tabular-model'"):
        load_model("tabular-modle")


def test_bare_torchvision_name_builds_random_weights_with_a_default_input():
    loaded = load_model("resnet18")
    assert type(loaded.module).__name__ == "ResNet"
    (x,), kwargs = loaded.inputs
    assert x.shape == (1, 3, 224, 224) and kwargs == {}


def test_torchvision_module_attr_with_args():
    loaded = load_model("torchvision.models:resnet18", {"num_classes": 10})
    assert loaded.module.fc.out_features == 10


def test_package_module_attr_calls_the_class_with_args():
    loaded = load_model("torch.nn:Linear", parse_args(["in_features=4", "out_features=2"]))
    assert isinstance(loaded.module, nn.Linear) and loaded.module.weight.shape == (2, 4)
    assert loaded.inputs is None


@pytest.fixture
def model_file(tmp_path):
    (tmp_path / "helper_layers.py").write_text("from torch import nn\nWIDTH = 3\n")
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        from helper_layers import WIDTH   # a sibling import must work

        def build(width=WIDTH):
            return nn.Sequential(nn.Linear(4, width), nn.ReLU())

        instance = nn.Linear(2, 2)
        not_a_model = 42

        def returns_list():
            return [1, 2]
    """))
    return path


def test_file_factory_with_args(model_file):
    loaded = load_model(f"{model_file}:build", {"width": 7})
    assert loaded.module[0].out_features == 7


def test_file_factory_can_import_its_siblings(model_file):
    assert load_model(f"{model_file}:build").module[0].out_features == 3


def test_module_instance_is_used_as_is(model_file):
    assert isinstance(load_model(f"{model_file}:instance").module, nn.Linear)


def test_args_for_an_instance_are_refused(model_file):
    with pytest.raises(ModelSpecError, match="already a module instance"):
        load_model(f"{model_file}:instance", {"x": 1})


def test_missing_attribute_suggests_the_closest(model_file):
    with pytest.raises(ModelSpecError, match="Did you mean 'build'"):
        load_model(f"{model_file}:biuld")


def test_non_module_results_are_refused(model_file):
    with pytest.raises(ModelSpecError, match="not an nn.Module"):
        load_model(f"{model_file}:not_a_model")
    with pytest.raises(ModelSpecError, match="returned a list"):
        load_model(f"{model_file}:returns_list")


def test_wrong_factory_args_point_at_arg(model_file):
    with pytest.raises(ModelSpecError, match="--arg"):
        load_model(f"{model_file}:build", {"depth": 3})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelSpecError, match="no such file"):
        load_model(f"{tmp_path}/nope.py:build")


def test_unimportable_module_is_named():
    with pytest.raises(ModelSpecError, match="cannot import module 'no_such_pkg.models'"):
        load_model("no_such_pkg.models:build")


def test_file_without_attribute_says_how_to_name_one():
    with pytest.raises(ModelSpecError, match="models.py:build_model"):
        load_model("models.py")


def test_unknown_bare_name_suggests_torchvision_models():
    with pytest.raises(ModelSpecError, match="Did you mean 'resnet18'"):
        load_model("resnt18")


def test_arg_values_are_python_literals_or_raw_strings():
    assert parse_arg("n=10") == ("n", 10)
    assert parse_arg("layers=[2, 2]") == ("layers", [2, 2])
    assert parse_arg("act=relu") == ("act", "relu")
    assert parse_arg("name='x=y'") == ("name", "x=y")
    assert parse_arg("flag=True") == ("flag", True)


def test_bad_args_are_refused():
    with pytest.raises(ModelSpecError, match="KEY=VALUE"):
        parse_arg("novalue")
    with pytest.raises(ModelSpecError, match="given twice"):
        parse_args(["a=1", "a=2"])


def test_loaded_torchvision_model_runs_on_its_default_input():
    loaded = load_model("torchvision.models:squeezenet1_1")
    (x,), _ = loaded.inputs
    with torch.no_grad():
        assert loaded.module.eval()(x).shape == (1, 1000)


def test_a_torchvision_segmentation_model_downloads_no_pretrained_backbone(monkeypatch):
    def no_downloads(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_downloads)
    loaded = load_model("lraspp_mobilenet_v3_large")  # its builder takes weights_backbone, pretrained by default
    assert type(loaded.module).__name__ == "LRASPP"


def test_torchvision_classes_are_built_from_their_submodule_or_the_package_with_the_args_alone():
    assert type(load_model("torchvision.models.alexnet:AlexNet").module).__name__ == "AlexNet"
    args = {"image_size": 32, "patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}
    assert type(load_model("torchvision.models:VisionTransformer", args).module).__name__ == "VisionTransformer"
    assert type(load_model("torchvision.models:resnet.resnet18").module).__name__ == "ResNet"


def test_a_factory_may_import_a_sibling_module_when_it_runs(tmp_path):
    (tmp_path / "late_helper.py").write_text("from torch import nn\nNet = nn.Identity\n")
    path = tmp_path / "late.py"
    path.write_text("def build():\n    from late_helper import Net\n    return Net()\n")
    assert type(load_model(f"{path}:build").module).__name__ == "Identity"


def test_the_shapetrace_script_imports_a_package_from_the_current_folder_as_python_m_does(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text("from torch import nn\ndef build():\n    return nn.Linear(2, 3)\n")
    script = Path(sys.executable).with_name("shapetrace")
    done = subprocess.run([str(script), "trace", "mypkg.nets:build", "-i", "4,2"], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Linear" in done.stdout


@pytest.mark.parametrize(("name", "example"), [("r3d_18", "--input 1,3,16,112,112"),
                                               ("raft_small", "--input 1,3,224,224 --input 1,3,224,224")])
def test_a_model_without_default_inputs_is_given_an_example_input_that_suits_it(name, example):
    with pytest.raises(ModelSpecError, match="has no default inputs") as info:
        load_model_and_inputs(name)
    assert example in str(info.value)


def test_a_quantizable_torchvision_classifier_has_the_plain_ones_default_input():
    loaded = load_model("quantized_resnet18")
    (image,), _ = loaded.inputs
    assert image.shape == (1, 3, 224, 224)


def test_a_one_letter_module_is_a_module_not_a_windows_drive(tmp_path, monkeypatch):
    (tmp_path / "q.py").write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = CliRunner().invoke(main, ["trace", "q:build", "--input", "3,4"])
    finally:
        sys.modules.pop("q", None)
    assert r.exit_code == 0, r.output
    assert "Linear" in r.stdout and "(3,2)" in r.stdout


def test_a_windows_drive_is_a_letter_a_colon_and_a_slash():
    assert split_spec("C:\\models.py") is None  # a bare path: the file's factory is still to be named
    assert split_spec("C:\\models.py:build") == ("C:\\models.py", "build")
    assert split_spec("c:/work/models.py:build") == ("c:/work/models.py", "build")
    assert split_spec("m:build") == ("m", "build")


def test_an_empty_module_part_is_a_usage_error_saying_what_to_write():
    r = CliRunner().invoke(main, ["trace", ":build", "--input", "3,4"])
    assert r.exit_code == 2, r.output
    assert "':build' names no module or file before ':'" in r.output and "package.module:build" in r.output
    assert "ValueError" not in r.output and "importlib" not in r.output


def test_arg_false_in_lower_case_is_a_usage_error_not_a_truthy_string():
    r = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "-a", "in_features=4", "-a", "out_features=3",
                                  "-a", "bias=false", "--input", "2,4"])
    assert r.exit_code == 2, r.output
    assert "'false' is not a Python literal" in r.output and "write bias=False" in r.output
    with pytest.raises(ModelSpecError, match="write x=None"):
        parse_arg("x=NULL")
    assert parse_arg("mode='false'") == ("mode", "false")  # the string itself, quoted (mode="'false'" in a shell)


def test_an_arg_string_is_stripped_of_the_spaces_around_it(tmp_path):
    path = tmp_path / "acts.py"
    path.write_text("from torch import nn\n\ndef build(act):\n    return {'relu': nn.ReLU, 'tanh': nn.Tanh}[act]()\n")
    r = CliRunner().invoke(main, ["trace", f"{path}:build", "-a", "act= relu ", "--input", "2,4"])
    assert r.exit_code == 0, r.output
    assert "ReLU" in r.stdout


def test_spaces_around_the_colon_of_a_model_spec_are_ignored(tmp_path):
    path = tmp_path / "spaced.py"
    path.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 2)\n")
    r = CliRunner().invoke(main, ["trace", f"{path} : build", "--input", "3,4"])
    assert r.exit_code == 0, r.output
    assert "(3,2)" in r.stdout
