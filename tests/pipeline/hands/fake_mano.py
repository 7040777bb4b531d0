"""Fake MANO files for tests: the stand-in hand's arrays in the official file formats.

The ``.pkl`` is pickled like the official one (Python-2 era): ``shapedirs`` and ``J`` are
chumpy objects (here instances of a class named ``chumpy.ch.Ch``, present only while
pickling), ``J_regressor`` is a scipy sparse matrix; extra keys the loader must ignore.
MANO_LEFT gets the *right* hand's shapedirs, as the official MANO_LEFT does.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pipeline.hands.standin import standin_arrays


def _chumpy_class():
    """A class that pickles as ``chumpy.ch.Ch`` with chumpy-like state (array in ``x``)."""
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()
            self._itr = None

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    mod.Ch = Ch
    return mod, Ch


def mano_dict(side: str) -> dict:
    a = standin_arrays(side, left_shapedirs_as_mano=True)
    return a


def write_fake_mano(folder: Path, fmt: str = "pkl") -> Path:
    """Write MANO_RIGHT/MANO_LEFT.<fmt> into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for side in ("right", "left"):
        a = mano_dict(side)
        path = folder / f"MANO_{side.upper()}.{fmt}"
        if fmt == "npz":
            np.savez(path, **a)
            continue
        mod, Ch = _chumpy_class()
        pkg = types.ModuleType("chumpy")
        pkg.ch = mod
        saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
        try:
            data = dict(a)
            data["shapedirs"] = Ch(a["shapedirs"])
            data["J"] = Ch(a["J_regressor"] @ a["v_template"])
            data["J_regressor"] = sp.csc_matrix(a["J_regressor"])
            data["bs_style"] = "lbs"
            data["bs_type"] = "lrotmin"
            data["hands_coeffs"] = np.zeros((10, 45))
            with open(path, "wb") as f:
                pickle.dump(data, f, protocol=2)
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v
    return folder
