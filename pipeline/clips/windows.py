"""Clips of a longer sequence: which source frames make each T-frame window (shared by the
hand-object and human jobs)."""

from __future__ import annotations

import numpy as np


def frame_windows(n_frames: int, frames_per_window: int, stride: int, valid=None,
                  min_valid: float = 0.0) -> list[list[int]]:
    """Non-overlapping windows of ``frames_per_window`` frames taken every ``stride`` source
    frames: [[0, s, .., (T-1)s], [Ts, ..], ...]; a tail shorter than T is dropped.

    ``valid``: optional bool [n_frames], "a hand is annotated in source frame i"; a window
    whose fraction of valid frames is below ``min_valid`` (0..1) is dropped (the others keep
    their frame ids). Windows dropped = ``len(frame_windows(n, T, s)) - len(this)``.
    """
    ids = list(range(0, n_frames, stride))
    wins = [ids[i:i + frames_per_window] for i in range(0, len(ids) - frames_per_window + 1, frames_per_window)]
    if valid is None or min_valid <= 0:
        return wins
    valid = np.asarray(valid, bool)
    if valid.shape != (n_frames,):
        raise ValueError(f"valid must be [{n_frames}] bool, got shape {valid.shape}")
    return [w for w in wins if valid[w].mean() >= min_valid]
