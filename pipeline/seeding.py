"""Deterministic random streams: the same (seed, item, clip, stream) gives the same numbers on
every machine, whatever the order in which items are processed."""

from __future__ import annotations

import hashlib

import numpy as np


def sample_rng(seed: int, uid: str, clip: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, uid, clip, stream): reruns and reorderings agree."""
    digest = hashlib.sha256(f"{seed}\x00{uid}\x00{clip}\x00{stream}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


