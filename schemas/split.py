"""The held-out split: which samples of a store are test samples. One definition for every consumer.

Rule (paper: "for each data, we select 3% as the test set"): an *item* is a test item when
``u(key) < fraction``, with ``u(key)`` = the first 8 bytes of SHA-256 of the item key (UTF-8) read as
a big-endian integer / 2**64, a uniform number in [0, 1) that is the same on every machine and run.

* The unit is the item key (``StoreReader.key(i)``: object uid, ``sequence/camera``), not the row:
  every clip / window of one item lands on the same side, so no window of a test sequence leaks
  into training through a sibling window.
* Small stores: when no key falls below ``fraction`` and the store has at least 2 distinct keys,
  the key with the smallest ``u`` is the test item, so every store of 2+ items has a test set.
  This depends only on the set of keys (still the same everywhere); when a store grows, that key
  may move back to training, never the other way round within a run.
* ``split_by="toolkit"``: a store made from a dataset's official split (``render-hoi dexycb
  --split s0-test``; the store manifest records ``official_split``) is wholly test when that name
  has a part ``test`` or ``val`` (``s0-test``, ``p1-val``, TACO's ``test_1``) and wholly train otherwise.
"""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "test", "all")
SPLIT_BY = ("hash", "toolkit")
TEST_FRACTION = 0.03


def key_hash(key: str) -> float:
    """u(key) in [0, 1): SHA-256 of the UTF-8 key, first 8 bytes big-endian / 2**64."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def held_out_keys(keys, fraction: float = TEST_FRACTION) -> set[str]:
    """The test items among ``keys`` (an iterable of item keys, repeats allowed)."""
    unique = sorted(set(keys))
    chosen = {k for k in unique if key_hash(k) < fraction}
    if not chosen and len(unique) >= 2 and fraction > 0:
        chosen = {min(unique, key=key_hash)}
    return chosen


def official_is_test(official_split: str | None) -> bool | None:
    """For ``split_by="toolkit"``: True/False from the store's recorded official split, None if unknown.
    Held out when a ``-``/``_``-separated part of the name is ``test`` or ``val``: DexYCB ``s0-test``,
    ARCTIC ``p1-val`` / ``p1_test``, TACO ``test_1`` .. ``test_4``."""
    if not official_split:
        return None
    return bool({"test", "val"} & set(re.split(r"[-_]", str(official_split).lower())))


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def held_out_mask(hashes, fraction: float = TEST_FRACTION):
    """``held_out_keys`` on distinct items given by their hashes (``schemas.index``: uint64, the first
    8 bytes of SHA-256 of each key, big-endian): bool per item, True = test. Same rule, same result."""
    import numpy as np

    from schemas.index import hash_fraction

    u = hash_fraction(np.asarray(hashes, dtype=np.uint64))
    chosen = u < fraction
    if not chosen.any() and u.size >= 2 and fraction > 0:
        chosen[int(np.argmin(u))] = True
    return chosen
