"""Models from other libraries, traced as they are: torchvision families, Hugging Face transformers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import require

import shapetrace
from shapetrace.tracer.records import Struct, iter_tensors


@pytest.mark.parametrize("name,size", [("vit_b_16", 224), ("googlenet", 64), ("densenet121", 64),
                                       ("efficientnet_b0", 64), ("swin_t", 64), ("convnext_tiny", 64)])
def test_torchvision_classifiers_trace_to_their_logits(name, size):
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    trace = shapetrace.trace(model, torch.randn(1, 3, size, size))
    assert trace.outputs.shape == (1, 1000)
    assert trace.calls[0].params == sum(p.numel() for p in model.parameters())
    assert not trace.failed


def test_detection_model_with_list_inputs_and_dict_outputs():
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3).eval()
    trace = shapetrace.trace(model, [torch.rand(3, 120, 160), torch.rand(3, 100, 100)])
    images = trace.inputs[0]
    assert [m.shape for m in images] == [(3, 120, 160), (3, 100, 100)]
    detections = trace.outputs
    assert isinstance(detections, list) and set(detections[0]) == {"boxes", "labels", "scores"}
    assert trace.calls_of("backbone.body")[0].outputs  # an OrderedDict of feature maps


def test_hugging_face_bert_from_config_gives_model_output_struct():
    transformers = require("transformers")
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 120, (2, 9))
    trace = shapetrace.trace(model, input_ids=ids, attention_mask=torch.ones(2, 9, dtype=torch.long))
    out = trace.outputs
    assert isinstance(out, Struct) and out.kind == "BaseModelOutputWithPoolingAndCrossAttentions"
    assert out.fields["last_hidden_state"].shape == (2, 9, 32)
    assert out.fields["pooler_output"].shape == (2, 32)
    assert set(trace.kwargs) == {"input_ids", "attention_mask"}
    layers = [c for c in trace.calls if c.cls == "BertLayer"]
    assert len(layers) == 2
    paths = [p for p, _ in iter_tensors(out)]
    assert paths == [".last_hidden_state", ".pooler_output"]


def test_gpt2_lm_head_with_tied_embedding_counts_the_tied_weight_once():
    transformers = require("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    trace = shapetrace.trace(model, torch.randint(0, 100, (1, 7)))
    assert trace.outputs.fields["logits"].shape == (1, 7, 100)
    assert trace.model.params == sum(p.numel() for p in model.parameters())
    assert trace.model.shared_params == 100 * 32  # lm_head.weight is transformer.wte.weight


def test_a_compiled_part_runs_eagerly_in_a_trace_so_every_layer_is_seen_and_dynamo_caches_nothing():
    from torch import nn
    from torch._dynamo.utils import counters

    block = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model = nn.Sequential(nn.Linear(4, 4), torch.compile(block, backend="eager")).eval()
    x = torch.randn(3, 4)
    model(x)  # compiled (and cached) by a plain forward first, as a training loop would
    compiled = dict(counters["frames"])
    for options in [{"grad": True}, {}, {"train": True}, {"ops": True}, {"device": "meta"}]:
        trace = shapetrace.trace(model, x, **options)
        assert [c.label for c in trace.calls] == ["(root)", "0", "1", "1.0", "1.1"], options
        assert trace.meta["compiled_ran_eagerly"] is True
    assert dict(counters["frames"]) == compiled  # nothing compiled again for the traces' modes
