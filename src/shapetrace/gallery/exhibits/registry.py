"""The registry of gallery exhibits: what an exhibit is (``Exhibit``), where they are kept (``EXHIBITS``) and the
chapter's order (``SECTIONS``).

Topic modules (``vision``, ``unet``, ``tabular``, ``text``) define their exhibits and ``register`` them here; this
module imports none of them, so they can import it without a cycle. The package (``shapetrace.gallery.exhibits``)
is the loader: it imports the topic modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EXHIBITS", "SECTIONS", "Exhibit", "register", "section_of"]


@dataclass(frozen=True)
class Exhibit:
    """One gallery exhibit.

    ``build()`` returns the model (an ``nn.Module``, randomly initialised, in eval mode unless the concept
    needs training mode); ``inputs()`` returns ``(args, kwargs)`` for its forward; ``caption`` is a few
    precise sentences saying what the exhibit shows (and where fastai 2.8 differs from the book's text);
    ``question`` the question of the chapter it answers, in one sentence. ``options`` holds rendering hints for
    the gallery (``{"layout": "u", "depth": 2, ...}``). ``pictures(name)``, for exhibits about images, returns
    the ``photo.Picture`` list its page shows (the photo and what the layer made of it). ``cost`` is its build
    time in the gallery, roughly, in tenths of a second of one CPU, so the builder can start the slowest first.
    ``device`` is where the gallery builds and traces it: PyTorch's ``meta`` device by default (shapes without
    arithmetic: the same trace as on the CPU but for the device, in a fraction of the time; integer inputs such
    as token ids stay real, so a forward that reads them, like BPT3C's padding, runs as on the CPU), ``"cpu"``
    for a forward that needs the values of floating-point tensors.
    """

    name: str
    title: str
    caption: str
    build: Callable[[], Any]
    inputs: Callable[[], tuple[tuple, dict]]
    topic: str = "vision"
    options: dict = field(default_factory=dict)
    question: str = ""
    pictures: Callable[[str], list] | None = None
    cost: int = 1  # about its gallery build time in tenths of a CPU second: the builder starts the costliest first
    device: str = "meta"  # where the gallery builds and traces it: "meta" (shapes only) or "cpu"


EXHIBITS: dict[str, Exhibit] = {}

# Chapter 15's order (15_arch_details: computer vision, with cnn_learner then unet_learner, then NLP, then
# tabular): each section's exhibits in the order the chapter reaches their question.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Computer vision", ("resnet34-cut", "model-meta-bodies", "resnet34-block-split", "pet-recognizer-resnet34",
                         "create-head-default", "create-head-lin-ftrs", "create-head-avg-pool",
                         "create-head-bn-final-lin-first", "concat-pool-vs-avg-pool", "siamese-resnet34")),
    ("U-Net", ("nearest-upsample-photo", "nearest-upsample-segmenter", "transposed-conv-photo", "camvid-unet",
               "camvid-unet-blur-attention", "superres-unet")),
    ("NLP", ("awd-lstm-language-model", "awd-lstm-classifier")),
    ("Tabular", ("tabular-model", "emb-sz-rule")),
)


def register(exhibit: Exhibit) -> Exhibit:
    """Add an exhibit to the registry (names are unique)."""
    if exhibit.name in EXHIBITS:
        raise ValueError(f"exhibit {exhibit.name!r} is registered twice")
    EXHIBITS[exhibit.name] = exhibit
    return exhibit


def section_of(name: str) -> str:
    """The chapter section an exhibit belongs to (``"More"`` for one outside ``SECTIONS``)."""
    return next((title for title, names in SECTIONS if name in names), "More")
