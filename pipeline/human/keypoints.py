"""OpenPose JSON keypoints (BODY_25 / COCO-18 with hands) <-> the store's 67-keypoint array.

The file format is OpenPose's ``--write_json`` output (doc/02_output.md), which DWPose and
most pose tools also write: one file per frame, ``{"version": 1.3, "people": [{"person_id":
[-1], "pose_keypoints_2d": [x0, y0, c0, x1, ...], "face_keypoints_2d": [...],
"hand_left_keypoints_2d": [...], "hand_right_keypoints_2d": [...], "pose_keypoints_3d": [],
...}]}``. The body model is told by the length of ``pose_keypoints_2d``: 75 = BODY_25,
54 = COCO-18. Coordinates are taken as source-image pixels (OpenPose's default
``--keypoint_scale 0``; pixel centres at integers, OpenCV's convention); a joint not found is
``0, 0, 0``. Empty hand lists mean "no hand".

The internal array is float64 [67, 3] = x, y (source pixels, OpenCV convention), confidence,
in ``schemas.store.HUMAN_KEYPOINT_NAMES`` order (BODY_25, left hand 21, right hand 21);
missing joints have confidence 0. COCO-18 maps onto BODY_25 by name; MidHip is the mean of
the hips when both are found (the foot joints stay missing).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from pipeline.errors import StepFailed
from schemas.store import BODY_25_NAMES, N_HUMAN_KEYPOINTS

N_BODY = len(BODY_25_NAMES)  # 25
N_HAND = 21
LEFT_HAND = slice(N_BODY, N_BODY + N_HAND)
RIGHT_HAND = slice(N_BODY + N_HAND, N_BODY + 2 * N_HAND)

# OpenPose COCO-18 order (getPoseBodyPartMapping(PoseModel::COCO_18))
COCO_18_NAMES = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip",
                 "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar")
COCO_TO_BODY25 = np.array([BODY_25_NAMES.index(n) for n in COCO_18_NAMES])
MIDHIP, RHIP, LHIP = (BODY_25_NAMES.index(n) for n in ("MidHip", "RHip", "LHip"))


def _triples(values, n: int, what: str) -> np.ndarray:
    a = np.asarray(values if values is not None else [], np.float64).reshape(-1)
    if a.size == 0:
        return np.zeros((n, 3))
    if a.size != 3 * n:
        raise ValueError(f"{what} has {a.size} numbers, expected {3 * n} (x, y, c per joint)")
    return a.reshape(n, 3)


def person_to_array(person: dict) -> np.ndarray:
    """One ``people`` entry -> float64 [67, 3] (see module doc). ValueError on a malformed entry."""
    pose = np.asarray(person.get("pose_keypoints_2d") or [], np.float64).reshape(-1)
    out = np.zeros((N_HUMAN_KEYPOINTS, 3))
    if pose.size == 3 * N_BODY:
        out[:N_BODY] = pose.reshape(N_BODY, 3)
    elif pose.size == 3 * len(COCO_18_NAMES):
        coco = pose.reshape(-1, 3)
        out[COCO_TO_BODY25] = coco
        if coco[COCO_18_NAMES.index("RHip"), 2] > 0 and coco[COCO_18_NAMES.index("LHip"), 2] > 0:
            out[MIDHIP, :2] = (out[RHIP, :2] + out[LHIP, :2]) / 2
            out[MIDHIP, 2] = min(out[RHIP, 2], out[LHIP, 2])
    elif pose.size:
        raise ValueError(f"pose_keypoints_2d has {pose.size} numbers: neither BODY_25 (75) nor COCO-18 (54)")
    out[LEFT_HAND] = _triples(person.get("hand_left_keypoints_2d"), N_HAND, "hand_left_keypoints_2d")
    out[RIGHT_HAND] = _triples(person.get("hand_right_keypoints_2d"), N_HAND, "hand_right_keypoints_2d")
    out[out[:, 2] <= 0] = 0.0
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    return out


def main_person(people: list[np.ndarray]) -> np.ndarray:
    """The person a clip follows when a frame has several: the largest summed body confidence
    (TikTok-style videos hold one dancer; extra detections are usually weak false positives)."""
    if not people:
        return np.zeros((N_HUMAN_KEYPOINTS, 3))
    return max(people, key=lambda p: float(p[:N_BODY, 2].sum()))


def read_openpose_json(path: Path) -> np.ndarray:
    """One OpenPose JSON file -> float64 [67, 3] of its main person (all zero if nobody).
    Raises StepFailed("keypoints", ...) on a file that is not OpenPose's format."""
    try:
        data = json.loads(Path(path).read_text())
        people = [person_to_array(p) for p in data["people"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"{Path(path).name}: not an OpenPose JSON file ({str(e)[:100]})"
        raise StepFailed("keypoints", why) from None
    return main_person(people)


_NUM = re.compile(r"(\d+)(?!.*\d)")


def _frame_number(name: str) -> int:
    """OpenPose names files ``<name>_<12-digit frame>_keypoints.json``; the last number is the frame."""
    m = _NUM.search(name.replace("_keypoints.json", ""))
    return int(m.group(1)) if m else -1


def keypoint_files(folder: Path) -> list[Path]:
    """The ``*_keypoints.json`` (or ``*.json``) files of a folder, in frame order."""
    folder = Path(folder)
    files = sorted(folder.glob("*_keypoints.json")) or sorted(folder.glob("*.json"))
    return sorted(files, key=lambda p: (_frame_number(p.name), p.name))


def to_openpose_person(kp: np.ndarray, body_model: str = "BODY_25") -> dict:
    """float [67, 3] -> one OpenPose ``people`` entry (BODY_25 or COCO-18 body), as OpenPose writes it."""
    kp = np.asarray(kp, np.float64)
    body = kp[:N_BODY] if body_model == "BODY_25" else kp[COCO_TO_BODY25]
    if body_model not in ("BODY_25", "COCO"):
        raise ValueError(f"body_model must be BODY_25 or COCO, got {body_model!r}")

    def flat(a):
        a = np.where(a[:, 2:3] > 0, a, 0.0)
        return [round(float(v), 6 if i % 3 == 2 else 3) for i, v in enumerate(a.reshape(-1))]

    return {"person_id": [-1], "pose_keypoints_2d": flat(body), "face_keypoints_2d": [],
            "hand_left_keypoints_2d": flat(kp[LEFT_HAND]), "hand_right_keypoints_2d": flat(kp[RIGHT_HAND]),
            "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
            "hand_right_keypoints_3d": []}


def write_openpose_json(path: Path, people: list[np.ndarray], body_model: str = "BODY_25") -> None:
    """Write one frame's file in OpenPose's ``--write_json`` format (version 1.3)."""
    body = {"version": 1.3, "people": [to_openpose_person(p, body_model) for p in people]}
    Path(path).write_text(json.dumps(body))
