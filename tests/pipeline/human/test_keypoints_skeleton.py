"""OpenPose JSON reader (files in OpenPose's own format), skeleton drawing, person crop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import StepFailed
from pipeline.human.crop import has_person, keypoints_to_crop, person_box
from pipeline.human.keypoints import COCO_18_NAMES, keypoint_files, read_openpose_json, write_openpose_json
from pipeline.human.skeleton import BODY_COLORS, HAND_COLORS, draw_skeleton
from schemas.store import BODY_25_NAMES, HUMAN_KEYPOINT_NAMES, N_HUMAN_KEYPOINTS

B = {n: i for i, n in enumerate(BODY_25_NAMES)}


def _openpose_file(path, pose, left=(), right=(), extra_people=()):
    """A frame file exactly as OpenPose 1.7 --write_json writes it (doc/02_output.md)."""
    person = {"person_id": [-1], "pose_keypoints_2d": list(pose), "face_keypoints_2d": [],
              "hand_left_keypoints_2d": list(left), "hand_right_keypoints_2d": list(right),
              "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
              "hand_right_keypoints_3d": []}
    people = [person] + [dict(person, pose_keypoints_2d=list(p)) for p in extra_people]
    path.write_text(json.dumps({"version": 1.3, "people": people}))
    return path


def test_keypoint_order_is_body25_then_left_then_right_hand():
    assert N_HUMAN_KEYPOINTS == 67
    assert HUMAN_KEYPOINT_NAMES[8] == "MidHip" and HUMAN_KEYPOINT_NAMES[24] == "RHeel"
    assert HUMAN_KEYPOINT_NAMES[25] == "LHandWrist" and HUMAN_KEYPOINT_NAMES[29] == "LHandThumb4"
    assert HUMAN_KEYPOINT_NAMES[46] == "RHandWrist" and HUMAN_KEYPOINT_NAMES[66] == "RHandPinky4"


def test_body25_file_with_hands_reads_in_order(tmp_path):
    pose = np.zeros((25, 3))
    pose[:, 0], pose[:, 1], pose[:, 2] = np.arange(25) * 10, 100 + np.arange(25), 0.8
    pose[B["LSmallToe"]] = 0  # not found: OpenPose writes 0, 0, 0
    left = np.column_stack([np.arange(21) + 300.0, np.full(21, 50.0), np.full(21, 0.6)])
    f = _openpose_file(tmp_path / "v_000000000000_keypoints.json", pose.ravel(), left.ravel(), [])
    kp = read_openpose_json(f)
    assert kp.shape == (67, 3)
    np.testing.assert_allclose(kp[B["RWrist"]], [40, 104, 0.8])
    assert kp[B["LSmallToe"], 2] == 0
    np.testing.assert_allclose(kp[25:46, 0], np.arange(21) + 300.0)
    assert (kp[46:, 2] == 0).all()  # empty right hand list: no right hand


def test_coco18_file_maps_by_name_and_derives_midhip(tmp_path):
    coco = np.zeros((18, 3))
    for i in range(18):
        coco[i] = (i * 7.0, i * 3.0, 0.9)
    kp = read_openpose_json(_openpose_file(tmp_path / "c.json", coco.ravel()))
    for i, name in enumerate(COCO_18_NAMES):
        np.testing.assert_allclose(kp[B[name]], coco[i])
    np.testing.assert_allclose(kp[B["MidHip"], :2], (coco[8, :2] + coco[11, :2]) / 2)  # COCO RHip 8, LHip 11
    assert (kp[B["LBigToe"]:25, 2] == 0).all()  # COCO has no feet


def test_main_person_is_the_most_confident_and_bad_files_fail(tmp_path):
    weak = np.tile([5.0, 5.0, 0.1], 25)
    strong = np.tile([50.0, 60.0, 0.9], 25)
    kp = read_openpose_json(_openpose_file(tmp_path / "two.json", weak, extra_people=[strong]))
    assert kp[0, 0] == 50.0
    (tmp_path / "empty.json").write_text(json.dumps({"version": 1.3, "people": []}))
    assert read_openpose_json(tmp_path / "empty.json").sum() == 0
    bad = {"version": 1.3, "people": [{"pose_keypoints_2d": [1, 2]}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(StepFailed, match="neither BODY_25"):
        read_openpose_json(tmp_path / "bad.json")


def test_writer_round_trips_and_files_sort_by_frame_number(tmp_path):
    rng = np.random.default_rng(0)
    kp = np.column_stack([rng.uniform(0, 200, (67, 2)), rng.uniform(0.1, 1, 67)])
    for i in (10, 2, 1):
        write_openpose_json(tmp_path / f"clip_{i:012d}_keypoints.json", [kp])
    files = keypoint_files(tmp_path)
    assert [f.name[5:17] for f in files] == ["000000000001", "000000000002", "000000000010"]
    np.testing.assert_allclose(read_openpose_json(files[0]), kp, atol=1e-3)


def test_skeleton_pixels_lie_on_the_limbs_in_openpose_colours():
    R = 64
    kp = np.zeros((67, 3))
    kp[B["Neck"]] = (20.5, 10.5, 0.9)
    kp[B["MidHip"]] = (20.5, 50.5, 0.9)          # limb (1, 8): the colour of joint 8 (255, 0, 0)
    kp[B["LShoulder"]] = (40.5, 10.5, 0.9)       # limb (1, 5): the colour of joint 5 (170, 255, 0)
    kp[B["RShoulder"]] = (5.5, 10.5, 0.01)       # below the render threshold: not drawn
    kp[25] = (50.5, 40.5, 0.9)                    # left hand wrist -> thumb1: hand colour 1 (100, 0, 0)
    kp[26] = (50.5, 60.5, 0.9)
    img = draw_skeleton(kp, R)
    assert img.shape == (R, R, 3) and img.dtype == np.uint8
    assert tuple(img[30, 20]) == tuple(BODY_COLORS[8])   # row 30, column 20: on the spine
    assert tuple(img[10, 30]) == tuple(BODY_COLORS[5])   # on the left shoulder limb
    assert tuple(img[50, 50]) == tuple(HAND_COLORS[1])   # on the hand bone
    assert img[10, :8].sum() == 0                         # nothing toward the unconfident right shoulder
    assert img[30, 30:45].sum() == 0 and img[:, 58:].sum() == 0
    drawn = img.any(-1)
    assert 80 <= drawn.sum() < 400                       # 1-px lines at 64 px (80 px of limbs), not areas


def test_crop_follows_the_person_and_maps_keypoints_into_it():
    def person_at(cx):
        kp = np.zeros((2, 67, 3))
        kp[:, :25, 0] = cx + np.linspace(-20, 20, 25)
        kp[:, :25, 1] = 100 + np.linspace(-60, 60, 25)
        kp[:, :25, 2] = 0.9
        kp[1, :25, 0] += 10  # it moves within the clip
        return kp

    boxes = []
    for cx in (100, 400):
        kp = person_at(cx)
        assert has_person(kp[0])
        box = person_box(kp, 640, 360, 1.3, 64)
        x0, y0, side = box
        boxes.append(box)
        pts = kp[:, :25, :2].reshape(-1, 2)
        assert (pts >= [x0, y0]).all() and (pts < [x0 + side, y0 + side]).all()  # every frame inside
        assert side == int(np.ceil(1.3 * 120))
        stored = keypoints_to_crop(kp, box, 64)
        np.testing.assert_allclose(stored[0, 0, :2], (kp[0, 0, :2] + 0.5 - [x0, y0]) * 64 / side, rtol=1e-5)
        assert (stored[:, :25, :2] >= 0).all() and (stored[:, :25, :2] <= 64).all()
    assert boxes[1][0] - boxes[0][0] == 300  # the box moved with the person
    few = person_at(100)[0]
    few[3:, 2] = 0
    assert not has_person(few)  # three joints are not a person
    missing = keypoints_to_crop(np.zeros((1, 67, 3)), (0, 0, 64), 64)
    assert (missing == [-1, -1, 0]).all()
