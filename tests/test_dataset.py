"""The training dataset, its collate and the seeded source mixer, on small synthetic folders."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from blazeface.data.dataset import (DataSpec, FaceTrainingDataset, MixedSampler, build_training_data, collate,
                                    parse_data_spec)
from blazeface.errors import BlazefaceError
from blazeface.models import get_config
from blazeface.priors import num_priors

SIZE = 64


def test_parse_data_spec():
    assert parse_data_spec("data/wider") == DataSpec(Path("data/wider"), None)
    assert parse_data_spec("data/wider:0.5") == DataSpec(Path("data/wider"), 0.5)
    assert parse_data_spec("data/mtfl:300") == DataSpec(Path("data/mtfl"), 300.0)
    assert parse_data_spec("C:/data/x") == DataSpec(Path("C:/data/x"), None)  # not a weight: part of the path
    with pytest.raises(BlazefaceError, match="weight"):
        parse_data_spec("data:-1")


def test_sampler_is_deterministic_and_proportional():
    sampler = MixedSampler([10, 4], [None, 8.0], seed=3)  # shares 10 : 8 of 14 items per epoch
    assert sampler.counts.tolist() == [8, 6] and len(sampler) == 14
    first = list(sampler)
    assert first == list(MixedSampler([10, 4], [None, 8.0], seed=3))
    assert first != list(MixedSampler([10, 4], [None, 8.0], seed=4))
    sampler.set_epoch(1)
    assert list(sampler) != first
    drawn = Counter()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        items = list(sampler)
        indices = [i for i, _ in items]
        assert sum(i < 10 for i in indices) == 8 and all(0 <= i < 14 for i in indices)
        drawn.update(indices)
    # 40 draws from source 0 (size 10): every image exactly 4 times; 30 from source 1 (size 4): 7 or 8 times.
    assert all(drawn[i] == 4 for i in range(10))
    assert all(drawn[i] in (7, 8) for i in range(10, 14))


def test_sampler_resumes_inside_an_epoch():
    sampler = MixedSampler([7, 5], seed=0, epoch_size=20)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start=13)
    assert len(sampler) == 7 and list(sampler) == whole[13:]
    with pytest.raises(BlazefaceError):
        sampler.set_epoch(0, start=21)


def test_sampler_rejects_bad_weights():
    with pytest.raises(BlazefaceError):
        MixedSampler([3, 0], [1.0, 1.0])
    with pytest.raises(BlazefaceError):
        MixedSampler([3], [0.0])
    assert MixedSampler([3, 5], [0.0, 1.0]).counts.tolist() == [0, 8]


def make_folder(root: Path, n: int = 6, corrupt: int | None = None, mtfl: bool = False) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for k in range(n):
        name = f"img{k}.jpg"
        image = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
        if k == corrupt:
            (images / name).write_bytes(b"not a jpeg")
        else:
            cv2.imwrite(str(images / name), image)
        x, y = 20 + 5 * k, 15
        points = " ".join(f"{x + 10 + dx} {y + 10 + dy}" for dx, dy in [(0, 0), (15, 0), (8, 8), (2, 15), (13, 15)])
        if mtfl:
            lines.append(f"{name} {x} {y} {x + 30} {y + 30} {points}")
        else:
            lines += [f"# {name}", f"{x} {y} 30 30 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1"]
    (root / ("labels.txt" if mtfl else "label.txt")).write_text("\n".join(lines) + "\n")
    return root


def test_dataset_items_batches_and_corrupt_images(tmp_path, caplog):
    config = get_config("blaze")
    folder = make_folder(tmp_path / "faces", corrupt=2)
    dataset, sampler = build_training_data([str(folder)], config, size=SIZE, seed=1)
    p = num_priors(config.priors, SIZE, SIZE)
    with caplog.at_level(logging.WARNING, logger="blazeface.data.dataset"):
        image, targets = dataset[(2, 123)]  # corrupt: the next sample is used instead
        dataset[(2, 124)]
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "img2.jpg" in warnings[0].getMessage()
    assert image.shape == (3, SIZE, SIZE)
    assert targets["labels"].shape == (p,) and targets["loc_t"].shape == (p, 4)
    assert targets["landm_t"].shape == (p, 10) and targets["landm_mask"].dtype == torch.bool
    again, again_targets = dataset[(2, 123)]
    assert torch.equal(image, again) and torch.equal(targets["labels"], again_targets["labels"])

    loader = DataLoader(dataset, batch_size=3, sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2
    images, batch = batches[0]
    assert images.shape == (3, 3, SIZE, SIZE) and batch["labels"].shape == (3, p)
    assert set(batch) == {"loc_t", "labels", "landm_t", "landm_mask", "landm_weight", "pos_weight"}
    assert (batch["labels"] == 1).any()


@pytest.mark.parametrize("preset", ["small-faces", "plain"])
def test_cached_images_give_the_same_samples(tmp_path, preset):
    """--cache-images keeps decoded photos read-only in memory: every (index, seed) gives the same tensor and
    targets as without the cache, also when an item comes back (a transform writing into its input would
    fail on the read-only array instead of corrupting the cache); a deleted file is still served."""
    config = get_config("blaze")
    folder = make_folder(tmp_path / "faces", corrupt=2)
    plain, _ = build_training_data([str(folder)], config, size=SIZE, seed=1, preset=preset)
    cached, _ = build_training_data([str(folder)], config, size=SIZE, seed=1, preset=preset, cache_images=True)
    for round_ in range(2):
        for item in [(k, 100 * round_ + k) for k in range(6)]:
            a, ta = plain[item]
            b, tb = cached[item]
            assert torch.equal(a, b) and all(torch.equal(ta[k], tb[k]) for k in ta), (round_, item)
    assert len(cached._cache) == 5  # the corrupt one is never cached
    (folder / "images" / "img0.jpg").unlink()
    assert cached._read_from(0)[1].image_path.name == "img0.jpg"  # served from memory


def test_non_exhaustive_source_ignores_far_background(tmp_path):
    config = get_config("blaze")
    folder = make_folder(tmp_path / "mtfl", mtfl=True)
    dataset = FaceTrainingDataset(build_training_data([folder], config, SIZE)[0].samples, config, SIZE,
                                  preset="plain")
    _, targets = dataset[0]
    labels = targets["labels"]
    assert (labels == 1).any() and (labels == -1).any() and (labels == 0).any()
    assert targets["landm_mask"].sum() == (labels == 1).sum()


def test_dataset_rejects_a_size_the_model_cannot_take():
    with pytest.raises(BlazefaceError, match="multiple of 16"):
        FaceTrainingDataset([], get_config("blaze"), size=100)


def test_all_images_unreadable(tmp_path):
    folder = make_folder(tmp_path / "bad", n=1, corrupt=0)
    dataset, _ = build_training_data([folder], get_config("blaze"), size=SIZE)
    with pytest.raises(BlazefaceError, match="unreadable"):
        dataset[0]


def test_mosaics_tile_only_exhaustive_photos_reproducibly(tmp_path):
    """--mosaic-p: an exhaustively labelled photo is tiled with three others (more faces in its crop on
    average), reproducibly per (index, seed); an MTFL photo (unlabelled faces) never is; mosaics off leave the
    augmentation stream as it was."""
    config = get_config("blaze")
    wider = make_folder(tmp_path / "wider", n=8)
    mtfl = make_folder(tmp_path / "mtfl", n=4, mtfl=True)
    samples = build_training_data([str(wider), str(mtfl)], config, size=SIZE)[0].samples
    never, _ = build_training_data([str(wider), str(mtfl)], config, size=SIZE, seed=1)
    zero = FaceTrainingDataset(samples, config, SIZE, seed=1, mosaic_p=0.0)
    always = FaceTrainingDataset(samples, config, SIZE, seed=1, mosaic_p=1.0)
    assert list(always.exhaustive) == list(range(8))
    faces = {"single": 0, "mosaic": 0}
    for item in [(k, 7 * k + 1) for k in range(12)]:
        a, ta = never[item]
        b, tb = zero[item]
        assert torch.equal(a, b) and all(torch.equal(ta[k], tb[k]) for k in ta)
        c, tc = always[item]
        again, tagain = always[item]
        assert torch.equal(c, again) and all(torch.equal(tc[k], tagain[k]) for k in tc)
        if item[0] >= 8:  # MTFL: never tiled
            assert torch.equal(a, c)
        else:
            faces["single"] += int((ta["labels"] == 1).sum())
            faces["mosaic"] += int((tc["labels"] == 1).sum())
    assert faces["mosaic"] > faces["single"]
    with pytest.raises(BlazefaceError, match="mosaic probability"):
        FaceTrainingDataset(samples, config, SIZE, mosaic_p=1.5)
