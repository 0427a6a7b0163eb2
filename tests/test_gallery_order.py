"""The gallery follows chapter 15 of the book (15_arch_details): computer vision (cnn_learner, then
unet_learner), then NLP, then tabular."""

from __future__ import annotations

from shapetrace.gallery.exhibits import SECTIONS, exhibit_names, section_of


def test_the_gallery_sections_come_in_the_chapters_order_nlp_before_tabular():
    assert [title for title, _ in SECTIONS] == ["Computer vision", "U-Net", "NLP", "Tabular"]


def test_the_language_model_is_listed_before_the_tabular_model():
    names = exhibit_names()
    assert names.index("awd-lstm-classifier") < names.index("tabular-model")
    assert [section_of(n) for n in ("camvid-unet", "awd-lstm-language-model", "emb-sz-rule")] == [
        "U-Net", "NLP", "Tabular"]
