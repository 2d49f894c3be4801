"""Input pipeline: crops, captions, skipped small images, per-process splits, mock COCO."""

import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from tgic_jax import input_pipeline
from tgic_jax.text_encoders import RandomTextEncoder


def _folder_config(folder, crop, **kw):
    base = dict(source="folder", folder=str(folder), captions="", max_images=0, crop_size=crop,
                shuffle_buffer=8, cache=False)  # fmt: skip
    return ml_collections.ConfigDict({**base, **kw})


def _write_folder(tmp_path, sizes_and_captions):
    captions = {}
    rng = np.random.default_rng(0)
    for i, ((h, w), caption) in enumerate(sizes_and_captions):
        name = f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
        captions[name] = caption
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    return tmp_path


def test_kodak_batches_are_random_crops_in_unit_range_with_their_captions(kodak_dir):
    cfg = _folder_config(kodak_dir, 64, max_images=3)
    ds = input_pipeline.make_dataset(cfg, batch_size=4, seed=0)
    batch = next(input_pipeline.numpy_batches(ds))
    assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].std() > 0.05  # real image content, not zeros
    known = json.loads((kodak_dir / "captions.json").read_text())
    first3 = {known[k] for k in sorted(known)[:3]}
    assert set(batch["caption"]) <= first3


def test_same_seed_gives_the_same_batches_and_another_seed_other_crops(kodak_dir):
    cfg = _folder_config(kodak_dir, 64, max_images=3)

    def batches(seed, n=3):
        it = input_pipeline.numpy_batches(input_pipeline.make_dataset(cfg, 4, seed=seed))
        return [next(it) for _ in range(n)]

    a, b, c = batches(5), batches(5), batches(6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        assert list(x["caption"]) == list(y["caption"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_images_smaller_than_the_crop_are_skipped(tmp_path):
    folder = _write_folder(
        tmp_path, [((32, 200), "too short"), ((80, 96), "big enough"), ((200, 40), "too narrow")]
    )
    ds = input_pipeline.make_dataset(_folder_config(folder, 64), batch_size=3, seed=1)
    batches = input_pipeline.numpy_batches(ds)
    captions = [c for _ in range(3) for c in next(batches)["caption"]]
    assert set(captions) == {"big enough"}


def test_a_share_without_a_usable_image_fails_clearly_instead_of_looping(tmp_path):
    folder = _write_folder(
        tmp_path, [((32, 200), "small 0"), ((200, 200), "big 1"), ((48, 48), "small 2"),
                   ((200, 200), "big 3")]
    )  # fmt: skip
    cfg = _folder_config(folder, 64)
    # Two processes: files 0, 2 (both too small) for process 0, files 1, 3 for process 1.
    with pytest.raises(ValueError, match=r"process 0 of 2 has no image of at least 64x64"):
        input_pipeline.make_dataset(cfg, batch_size=2, seed=0, process_index=0, process_count=2)
    ds = input_pipeline.make_dataset(cfg, batch_size=2, seed=0, process_index=1, process_count=2)
    assert set(next(input_pipeline.numpy_batches(ds))["caption"]) <= {"big 1", "big 3"}


def test_one_caption_is_picked_at_random_from_a_list(tmp_path):
    folder = _write_folder(tmp_path, [((64, 64), ["first", "second", "third"])])
    ds = input_pipeline.make_dataset(_folder_config(folder, 64), batch_size=8, seed=2)
    batches = input_pipeline.numpy_batches(ds)
    captions = [c for _ in range(4) for c in next(batches)["caption"]]
    assert set(captions) == {"first", "second", "third"}


def test_folder_is_split_disjointly_between_processes(kodak_dir):
    names = [
        {p.name for p, _ in input_pipeline.list_folder(kodak_dir, max_images=12)[i::2]}
        for i in range(2)
    ]
    assert len(names[0]) == len(names[1]) == 6 and not names[0] & names[1]
    cfg = _folder_config(kodak_dir, 64, max_images=12)
    caps = [
        set(
            next(input_pipeline.numpy_batches(
                input_pipeline.make_dataset(cfg, 12, seed=0, process_index=i, process_count=2)
            ))["caption"]
        )
        for i in range(2)
    ]  # fmt: skip
    assert not caps[0] & caps[1]


def test_mock_coco_captions_through_tfds_even_splits():
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = ml_collections.ConfigDict(
        dict(source="tfds", tfds_name="coco_captions", tfds_split="train", data_dir="",
             crop_size=16, shuffle_buffer=4)
    )  # fmt: skip
    with tfds.testing.mock_data(num_examples=16):
        ds = input_pipeline.make_dataset(cfg, batch_size=4, seed=0, process_index=1,
                                         process_count=2)  # fmt: skip
        batch = next(input_pipeline.numpy_batches(ds))
    assert batch["image"].shape == (4, 16, 16, 3)
    assert all(isinstance(c, str) and c for c in batch["caption"])


def test_random_text_encoder_is_a_deterministic_function_of_the_caption():
    enc = input_pipeline.build_text_encoder(
        ml_collections.ConfigDict(dict(encoder="random", max_length=5)), width=12
    )
    a, mask = enc.encode(["a cat", "a dog", "a cat"])
    assert a.shape == (3, 5, 12) and mask.shape == (3, 5)
    np.testing.assert_array_equal(a[0], a[2])
    assert np.abs(a[0] - a[1]).max() > 0.1
    np.testing.assert_array_equal(enc.encode(["a dog"])[0][0], a[1])


def test_encoded_batches_carry_text_states_for_each_image():
    enc = RandomTextEncoder(width=4, max_length=3)
    batches = iter([{"image": np.zeros((2, 8, 8, 3), np.float32), "caption": ["x", "y"]}])
    out = next(input_pipeline.encode_batches(batches, enc, lambda caps: np.ones((len(caps), 7))))
    assert out["text"].shape == (2, 3, 4) and out["clip_text"].shape == (2, 7)
