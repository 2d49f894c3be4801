"""Evaluation sets: Kodak with its captions, caption files, TFDS sets."""

import json

import numpy as np
import pytest

from tgic_jax.evaluation import driver, sets


def test_kodak_captions_load_with_the_garbled_kodim17_kept(kodak_dir):
    eval_set = sets.kodak_set(kodak_dir)
    assert len(eval_set) == 24 and eval_set.errors == []
    by_name = {item.name: item for item in eval_set}
    assert by_name["kodim01.png"].caption == "a brick building with red doors and windows"
    assert by_name["kodim17.png"].caption.startswith("a statue of a woman holding a coco")
    assert "\ufffd" in by_name["kodim17.png"].caption


def test_captions_json_list_form_and_bad_entries(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            [
                {"image": "a.png", "caption": "x"},
                {"file_name": "b.png", "captions": ["y", "z"]},
                {"image": "c.png", "caption": 3},
            ]
        )
    )
    caps, problems = sets.load_captions(path)
    assert caps == {"a.png": ["x"], "b.png": ["y", "z"]}
    assert len(problems) == 1 and "'c.png'" in problems[0]
    path.write_text("[1, 2]")
    with pytest.raises(sets.CaptionsError, match="entry 0 is not an object"):
        sets.load_captions(path)
    with pytest.raises(sets.CaptionsError, match="does not exist"):
        sets.load_captions(tmp_path / "nope.json")


def test_tfds_coco_uses_the_first_caption_by_default_and_labels_the_oracle(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        first = sets.tfds_set("coco", max_images=2)
        oracle = sets.tfds_set("coco", max_images=2, caption_mode="best_lpips")
        clic = sets.tfds_set("clic", max_images=1)
    assert first.name == "coco/val" and len(first) == 2
    item = first.items[0]
    assert item.array.ndim == 3 and len(item.captions) > 1
    assert item.caption == item.captions[0] and item.caption_note.startswith("COCO caption 1 of")
    assert "ORACLE" in oracle.caption_source and "oracle" in oracle.items[0].caption_note
    assert clic.items[0].caption == "" and "no captions" in clic.items[0].caption_note
    image, _ = driver.load_item_image(clic.items[0])
    assert image.dtype == np.float32 and image.shape[-1] == 3 and image.max() <= 1.0
