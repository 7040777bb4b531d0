"""Crops that stay on the image (shift before pad), which crop pixels the camera saw, and how much
of a hand is inside the image."""

import numpy as np
import pytest

from pipeline.clips.crop import (
    TooMuchPadding,
    check_padding,
    crop_box,
    crop_image,
    crop_valid,
    fit_box,
    inside_fraction,
    padding_fraction,
)


def test_a_box_that_fits_is_shifted_inside_the_image():
    assert fit_box(-30, 400, 200, 640, 480) == (0, 280, 200)      # off the left and the bottom: shifted in
    assert fit_box(500.7, -2, 200, 640, 480) == (440, 0, 200)
    assert fit_box(100.9, 50.2, 200, 640, 480) == (100, 50, 200)  # inside: kept (floored)
    # too tall for the image: covers all of its height (the least padding), x still shifted inside
    assert fit_box(-50, -10, 600, 640, 480) == (0, -10, 600)
    assert fit_box(-50, -300, 600, 640, 480) == (0, -120, 600)
    assert fit_box(-50, 90, 600, 640, 480) == (0, 0, 600)


def test_a_hand_entering_the_scene_does_not_pull_the_crop_off_the_image():
    """The old crop grew around a hand outside the view and padded it with black; now the points are
    clipped to the image and the box shifted inside: no padding at all."""
    hand = np.array([[-150.0, 200.0], [-20.0, 260.0], [30.0, 240.0]])     # mostly left of the image
    obj = np.array([[100.0, 220.0], [180.0, 300.0]])
    x0, y0, side = crop_box(np.concatenate([hand, obj]), 640, 480, 1.25, 16)
    assert x0 >= 0 and y0 >= 0 and x0 + side <= 640 and y0 + side <= 480
    assert crop_valid((x0, y0, side), 64, 640, 480).all()


def test_valid_marks_the_padding_exactly_and_conservatively():
    W, H, R = 640, 200, 100
    box = fit_box(0, -100, 400, W, H)                              # side 400 > height 200: 200 rows padded
    assert box == (0, -100, 400)
    v = crop_valid(box, R, W, H)
    assert v[:, 0].tolist() == [False] * 25 + [True] * 50 + [False] * 25 and v.all(axis=1)[25:75].all()
    assert padding_fraction(v[None])[0] == pytest.approx(0.5)
    img = np.full((H, W, 3), 200, np.uint8)
    out = crop_image(img, box, R)
    assert out[v].min() > 150 and out[~v].max() < 200               # valid pixels hold the picture
    # a crop pixel half over the padding is not valid: side 5 px -> R 2 (2.5 source px each)
    half = crop_valid((0, -2, 5), 2, 10, 10)
    assert half.tolist() == [[False, False], [True, True]]
    # pixels the dataset does not show (image_valid False) are not valid either
    seen = np.ones((H, W), bool)
    seen[:, :100] = False
    v2 = crop_valid(box, R, W, H, seen)
    assert not v2[:, :25].any() and v2[25:75, 25:].all()


def test_too_much_padding_is_refused_with_one_reason():
    v = np.ones((3, 10, 10), bool)
    v[1, :, :4] = False                                              # frame 1: 40 % padding
    np.testing.assert_allclose(check_padding(v, 0.5), [0, 0.4, 0])
    with pytest.raises(TooMuchPadding) as e:
        check_padding(v, 0.25)
    assert e.value.fraction == pytest.approx(0.4)
    assert e.value.reason == "more than 25% of the crop is padding outside the camera image (--max-padding)"


def test_inside_fraction_counts_points_on_pixels_the_camera_saw():
    p = np.array([[5.0, 5.0], [-1.0, 5.0], [9.99, 0.0], [10.0, 3.0], [3.0, 3.0]])
    assert inside_fraction(p, 10, 10) == pytest.approx(3 / 5)
    assert inside_fraction(p, 10, 10, in_front=np.array([1, 1, 1, 1, 0], bool)) == pytest.approx(2 / 5)
    seen = np.ones((10, 10), bool)
    seen[5, 5] = False
    assert inside_fraction(p, 10, 10, seen) == pytest.approx(2 / 5)
    assert inside_fraction(np.zeros((0, 2)), 10, 10) == 0.0
