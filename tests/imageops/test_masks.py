"""Inpainting masks: per-index seeding (byte-identical for every batch split), each kind's geometry checked against
what its spec says, the spec checker's named problems, and binarisation against diffusers' own mask processor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from evalkit.errors import ConfigError
from evalkit.imageops.masks import MASK_KINDS, STROKE_SEGMENTS, STROKE_STEP, binarize, check_mask_spec, make_masks

SPECS = [
    {"kind": "centre", "size": 0.5},
    {"kind": "boxes", "count": 2, "min_size": 0.2, "max_size": 0.5, "seed": 3},
    {"kind": "strokes", "count": 3, "width": 0.1, "seed": 7},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["kind"])
def test_masks_do_not_depend_on_the_batch_split(spec):
    idx = np.arange(11)
    whole = make_masks(spec, idx, (40, 56))
    assert whole.shape == (11, 1, 40, 56) and whole.dtype == np.uint8 and set(np.unique(whole)) <= {0, 1}
    parts = [make_masks(spec, idx[a:b], (40, 56)) for a, b in ((0, 3), (3, 4), (4, 10), (10, 11))]
    assert np.concatenate(parts).tobytes() == whole.tobytes()
    shuffled = np.array([7, 2, 10, 0])
    assert make_masks(spec, shuffled, (40, 56)).tobytes() == whole[shuffled].tobytes()
    if spec["kind"] != "centre":  # seeded kinds: a new index or seed draws a new mask
        assert len({m.tobytes() for m in whole}) == 11
        assert make_masks({**spec, "seed": spec["seed"] + 1}, idx, (40, 56)).tobytes() != whole.tobytes()


def test_centre_is_the_centred_box_of_the_given_fraction_of_each_side():
    for (h, w), size in (((16, 16), 0.5), ((30, 40), 0.25), ((9, 9), 1.0)):
        m = make_masks({"kind": "centre", "size": size}, np.arange(3), (h, w))
        rows, cols = np.nonzero(m[0, 0])
        bh, bw = round(size * h), round(size * w)
        assert m[0, 0].sum() == bh * bw and np.ptp(rows) + 1 == bh and np.ptp(cols) + 1 == bw  # one full box
        assert abs((rows.min() + rows.max()) / 2 - (h - 1) / 2) <= 0.5  # centred (to the pixel)
        assert abs((cols.min() + cols.max()) / 2 - (w - 1) / 2) <= 0.5
        assert (m == m[0]).all()  # the same for every index


def test_one_box_is_a_full_axis_aligned_rectangle_with_sides_in_range():
    h, w = 50, 80
    masks = make_masks(
        {"kind": "boxes", "count": 1, "min_size": 0.2, "max_size": 0.5, "seed": 0}, np.arange(40), (h, w)
    )
    sides = []
    for m in masks[:, 0]:
        rows, cols = np.nonzero(m)
        bh, bw = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert m.sum() == bh * bw  # the bounding box is entirely filled: one rectangle
        assert round(0.2 * h) <= bh <= round(0.5 * h) and round(0.2 * w) <= bw <= round(0.5 * w)
        sides.append((bh / h, bw / w))
    sides = np.array(sides)
    print(f"[agreement] box sides / image side over 40 masks: {sides.min():.3f}..{sides.max():.3f} (spec 0.2..0.5)")
    assert sides.min() < 0.3 and sides.max() > 0.4  # the range is used, not one value


def test_strokes_are_connected_brush_lines_of_the_given_width():
    cv2 = pytest.importorskip("cv2")
    h, w, width = 64, 96, 0.1
    brush = round(width * min(h, w))
    masks = make_masks({"kind": "strokes", "count": 1, "width": width, "seed": 0}, np.arange(20), (h, w))
    longest = STROKE_SEGMENTS[1] * STROKE_STEP[1] * min(h, w)
    for m in masks[:, 0]:
        assert cv2.connectedComponents(m)[0] - 1 == 1  # one stroke: one piece
        thickness = 2 * cv2.distanceTransform(m, cv2.DIST_L2, 5).max()
        assert thickness >= brush - 2  # at least the brush wide somewhere
        assert m.sum() <= longest * brush + math.pi * (brush / 2 + 1) ** 2 * (STROKE_SEGMENTS[1] + 1)
    three = make_masks({"kind": "strokes", "count": 3, "width": width, "seed": 0}, np.arange(20), (h, w))
    one_cover, three_cover = masks.mean(), three.mean()
    print(f"[agreement] stroke cover: 1 stroke {one_cover:.3f}, 3 strokes {three_cover:.3f}")
    assert three_cover > one_cover and 0 < one_cover < 0.5


def test_check_mask_spec_names_each_problem_and_accepts_good_specs():
    for spec in SPECS + [{"kind": k} for k in MASK_KINDS]:
        assert check_mask_spec(spec) == []
    assert check_mask_spec({"kind": "centre", "size": 2}) == [
        "conditions.masks.size: expected a number in (0, 1]; got 2"
    ]
    assert (
        "unknown mask kind 'circle'; expected one of centre, boxes, strokes" in check_mask_spec({"kind": "circle"})[0]
    )
    assert check_mask_spec({"size": 0.5})[0].startswith("conditions.masks.kind: required")
    problems = check_mask_spec({"kind": "boxes", "count": 0, "min_size": 0.6, "max_size": 0.5, "width": 1}, "m")
    assert len(problems) == 3
    assert any(p.startswith("m.count: expected an integer") for p in problems)
    assert any(
        p.startswith("m.width: unknown key") and "allowed: kind, count, min_size, max_size, seed" in p for p in problems
    )
    assert any(p.startswith("m.min_size: must not exceed max_size") for p in problems)
    assert check_mask_spec({"kind": "strokes", "seed": -1, "count": True}) != []
    assert check_mask_spec("centre")[0].startswith("conditions.masks: expected a mapping")
    with pytest.raises(ConfigError, match="conditions.masks.size"):
        make_masks({"kind": "centre", "size": 0}, np.arange(2), (8, 8))


def test_binarize_agrees_with_diffusers_mask_processor():
    from diffusers.image_processor import VaeImageProcessor

    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    gray = np.repeat(levels[None, None], 3, axis=1)  # every level, as an RGB mask file decodes
    proc = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True)
    want = proc.preprocess(Image.fromarray(gray[0].transpose(1, 2, 0)), height=16, width=16).numpy()
    got = binarize(gray)
    assert got.shape == (1, 1, 16, 16) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want.astype(np.uint8))
    agree = int((got == want).sum())
    print(f"[agreement] binarize vs diffusers VaeImageProcessor(do_binarize), all 256 levels: {agree}/256 equal")
    with pytest.raises(ConfigError, match="uint8 images"):
        binarize(gray[0])


def test_mask_crops_are_pillow_crops_of_each_masks_box_resized_back():
    from PIL import Image

    from evalkit.imageops.masks import mask_crops

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 3, 24, 20), dtype=np.uint8)
    masks = make_masks({"kind": "boxes", "count": 2, "seed": 1}, np.arange(5), (24, 20))
    masks[4] = 0  # an empty mask keeps the whole image
    got = mask_crops(images, masks)
    for i in range(5):
        rows, cols = np.nonzero(masks[i, 0])
        box = (0, 0, 20, 24) if rows.size == 0 else (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        pil = Image.fromarray(images[i].transpose(1, 2, 0)).crop(tuple(int(b) for b in box))
        want = np.asarray(pil.resize((20, 24), Image.BICUBIC)).transpose(2, 0, 1)
        np.testing.assert_array_equal(got[i], want)
    np.testing.assert_array_equal(got[4], images[4])  # the whole image at its own size: unchanged
    parts = np.concatenate([mask_crops(images[:2], masks[:2]), mask_crops(images[2:], masks[2:])])
    np.testing.assert_array_equal(parts, got)  # image by image: any batch split
