"""Building the gallery's models under ``MetaShortcuts`` gives the same models, and leaves real tensors to torch.

The oracles are torch's own meta kernels (the same call without the shortcuts) and, for the exhibits, the
gallery's trace of the model built without the shortcuts, compared as JSON, byte for byte.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.gallery.exhibits import exhibit_names, get_exhibit
from shapetrace.gallery.meta_shortcuts import MetaShortcuts
from shapetrace.gallery.site import _trace_exhibit


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def _same_tensor_facts(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a.shape, a.dtype, a.device, a.stride(), a.requires_grad) == (b.shape, b.dtype, b.device, b.stride(),
                                                                         b.requires_grad)


@pytest.mark.parametrize("name", exhibit_names())
def test_an_exhibit_traces_to_the_same_json_with_and_without_the_shortcuts(name):
    ex = get_exhibit(name)
    with_shortcuts = _trace_exhibit(ex)
    without = _trace_exhibit(ex, shortcuts=False)
    assert with_shortcuts.to_json() == without.to_json()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_an_eval_batch_norm_on_meta_gives_torchs_shape_dtype_and_layout(layout):
    x = _meta(2, 8, 5, 7)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(8, device="meta").eval()
    with MetaShortcuts():
        fast = bn(x)
    _same_tensor_facts(fast, bn(x))


def test_a_batch_norm_with_the_wrong_channels_still_raises_torchs_error():
    bn = nn.BatchNorm2d(8, device="meta").eval()
    with pytest.raises(RuntimeError) as without:
        bn(_meta(2, 3, 5, 5))
    with MetaShortcuts(), pytest.raises(RuntimeError) as with_shortcuts:
        bn(_meta(2, 3, 5, 5))
    assert str(with_shortcuts.value) == str(without.value)


def test_a_training_batch_norm_of_one_value_per_channel_still_raises_torchs_error():
    bn = nn.BatchNorm1d(4, device="meta").train()
    with MetaShortcuts(), pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(_meta(1, 4))


def test_relu_in_place_returns_its_input_and_out_of_place_a_new_tensor():
    x = _meta(2, 3)
    with MetaShortcuts():
        assert nn.ReLU(inplace=True)(x) is x
        assert torch.relu_(x) is x
        y = F.relu(x)
    assert y is not x
    _same_tensor_facts(y, F.relu(x))


def test_operations_autograd_follows_go_to_torch():
    w = torch.empty(3, 4, device="meta", requires_grad=True)
    with MetaShortcuts():
        y = F.relu(w)
    assert y.grad_fn is not None
    _same_tensor_facts(y, F.relu(w))


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_on_meta_has_the_weights_shape():
    conv = nn.utils.weight_norm(nn.Conv2d(3, 8, 3, device="meta"))
    x = _meta(1, 3, 9, 9)
    with torch.no_grad(), MetaShortcuts():
        fast = conv(x)
    with torch.no_grad():
        _same_tensor_facts(fast, conv(x))


def test_initialisation_of_a_meta_tensor_is_skipped():
    t = _meta(4, 4)
    with MetaShortcuts():
        assert nn.init.kaiming_uniform_(t) is t
        assert nn.init.constant_(t, 1.0) is t
        assert t.normal_() is t
    assert t._version == 0  # nothing was written


def test_cpu_tensors_are_initialised_and_computed_as_without_the_shortcuts():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    torch.manual_seed(0)
    with MetaShortcuts():
        shortcut = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    for a, b in zip(plain.state_dict().values(), shortcut.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with MetaShortcuts():
        assert torch.equal(shortcut(x), plain(x))


def test_initialisation_is_recognised_through_a_wrapper_that_names_the_original():
    """torchlens rebinds torch's functions in a process that used it, marking each wrapper with the original's id."""
    def wrapper(*args, **kwargs):
        raise AssertionError("the shortcut should have answered")

    original = torch.Tensor.normal_  # already a wrapper itself if this process ran torchlens before
    wrapper.__tl_original_id__ = getattr(original, "__tl_original_id__", id(original))
    t = _meta(2, 2)
    with MetaShortcuts() as mode:
        assert mode.__torch_function__(wrapper, (torch.Tensor,), (t,), {}) is t
