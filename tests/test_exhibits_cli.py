"""Every gallery exhibit traces from the command line, and the gallery covers each concept of chapter 15."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import exhibits_built_once

from shapetrace.cli import main
from shapetrace.gallery.exhibits import exhibit_names, get_exhibit

# One exhibit (at least) per concept the chapter-15 issue lists.
CONCEPTS = {
    "head and body of resnet34, and the cut": ["pet-recognizer-resnet34", "resnet34-cut"],
    "model_meta for the known families": ["model-meta-bodies"],
    "the default head and three variants": ["create-head-default", "create-head-lin-ftrs", "create-head-avg-pool",
                                            "create-head-bn-final-lin-first"],
    "AdaptiveConcatPool2d against AdaptiveAvgPool2d": ["concat-pool-vs-avg-pool"],
    "nearest-neighbour upsampling on the photo": ["nearest-upsample-photo"],
    "the transposed ConvLayer on the photo": ["transposed-conv-photo"],
    "the CamVid U-Net and its blur/self-attention/last-cross variant": ["camvid-unet", "camvid-unet-blur-attention"],
    "a super-resolution / colouriser U-Net": ["superres-unet"],
    "a segmentation head upsampling with nearest-neighbour interpolation": ["nearest-upsample-segmenter"],
    "TabularModel with the rule's embedding sizes": ["tabular-model", "emb-sz-rule"],
    "the AWD-LSTM classifier's BPT3C chunk calls": ["awd-lstm-classifier"],
    "the language model": ["awd-lstm-language-model"],
    "the per-block splitter's parameter groups": ["resnet34-block-split"],
    "a Siamese network: one encoder called on two images, a custom splitter": ["siamese-resnet34"],
}


def test_every_concept_of_the_chapter_has_an_exhibit_with_a_caption():
    names = set(exhibit_names())
    for concept, wanted in CONCEPTS.items():
        assert set(wanted) <= names, concept
        for name in wanted:
            assert len(get_exhibit(name).caption.split()) >= 15, f"{name}: caption too short"


@pytest.mark.parametrize("name", exhibit_names())
def test_shapetrace_trace_works_for_every_exhibit(name, shared_exhibits):
    # the CLI on each exhibit's model; the builds (seconds for the U-Nets) have their own tests
    with exhibits_built_once(shared_exhibits):
        result = CliRunner().invoke(main, ["trace", name, "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trace = json.loads(result.output)
    assert trace["calls"] and trace["failure"] is None
