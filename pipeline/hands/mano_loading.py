"""Read the user's MANO files (MANO_RIGHT / MANO_LEFT, .pkl or .npz) without chumpy.

The official ``.pkl`` files hold chumpy objects (``shapedirs`` and others); chumpy does
not import on current numpy. ``MANO_UNPICKLER`` is a restricted ``pickle.Unpickler``: it
maps every ``chumpy.*`` class to ``_ChumpyStub`` (which keeps the pickled state; the
array is its ``x``), allows numpy arrays/dtypes, scipy sparse matrices and plain Python
containers, and refuses every other global (so a pickle cannot run code).

MANO is licensed and never shipped: get it from https://mano.is.tue.mpg.de.

Left-hand shape directions: MANO_LEFT ships the right hand's ``shapedirs`` although its
template is mirrored, so the same ``betas`` give a differently shaped left hand
(smplx issue #48). DexYCB was annotated with the files as shipped (dex-ycb-toolkit issue
#28), so the default here is *as shipped*; ``fix_left_shapedirs=True`` negates the x
component of the left hand's ``shapedirs`` (the usual fix, e.g. for data fitted with it).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

MANO_URL = "https://mano.is.tue.mpg.de"
REQUIRED = {
    "v_template": (778, 3), "f": (1538, 3), "weights": (778, 16), "J_regressor": (16, 778),
    "kintree_table": (2, 16), "shapedirs": (778, 3, None), "posedirs": (778, 3, 135),
    "hands_components": (None, 45), "hands_mean": (45,),
}


class _ChumpyStub:
    """Stands in for any chumpy class: keeps the pickled state; ``array`` is its value."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"x": state})

    @property
    def array(self) -> np.ndarray:
        for key in ("x", "a", "_x"):
            if key in self.__dict__:
                return np.asarray(_plain(self.__dict__[key]))
        if self._args:
            return np.asarray(_plain(self._args[0]))
        raise ValueError("a chumpy object in the MANO file holds no array")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor"),
    ("builtins", "object"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("__builtin__", "object"), ("__builtin__", "set"), ("copy_reg", "_reconstructor"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class MANO_UNPICKLER(pickle.Unpickler):  # noqa: N801  (reads like the class it replaces)
    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStub
        if module.startswith("scipy.sparse"):
            import scipy.sparse as sp

            cls = getattr(sp, name, None)
            if isinstance(cls, type):
                return cls
        if (module, name) in _ALLOWED:
            if module == "copy_reg":
                module = "copyreg"
            if module == "__builtin__":
                module = "builtins"
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a MANO file")


def _plain(value):
    """chumpy stubs / scipy sparse / numpy -> numpy (sparse kept sparse)."""
    if isinstance(value, _ChumpyStub):
        return value.array
    if hasattr(value, "todense") and not isinstance(value, np.ndarray):
        return value
    return np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else value


def find_mano_file(mano_dir: str | Path, side: str) -> Path:
    """The MANO_RIGHT/MANO_LEFT file of ``side`` in ``mano_dir`` (or its ``models/``), .pkl before .npz."""
    stem = f"MANO_{side.upper()}"
    d = Path(mano_dir)
    if not d.is_dir():
        raise UserError(f"--mano-dir {d} is not a folder; it must hold {stem}.pkl (MANO is licensed, "
                        f"get it from {MANO_URL})")
    for folder in (d, d / "models"):
        for ext in (".pkl", ".npz"):
            if (folder / (stem + ext)).is_file():
                return folder / (stem + ext)
    raise UserError(f"{d / (stem + '.pkl')} not found (nor .npz); MANO is licensed and not shipped: "
                    f"get MANO_RIGHT/MANO_LEFT from {MANO_URL}")


def read_mano_arrays(path: str | Path) -> dict:
    """The arrays of one MANO file as plain numpy (``J_regressor`` dense), validated; UserError if unusable."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        else:
            with open(path, "rb") as f:
                raw = MANO_UNPICKLER(f, encoding="latin1").load()
    except Exception as e:  # noqa: BLE001  (any unreadable file is the user's to fix)
        raise UserError(f"cannot read MANO file {path}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                        f" (expected the official file from {MANO_URL})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a MANO model file (no dict of arrays); get it from {MANO_URL}")
    out = {}
    for key, want in REQUIRED.items():
        if key not in raw:
            raise UserError(f"{path} is not a MANO model file: array {key!r} is missing; get it from {MANO_URL}")
        v = _plain(raw[key])
        v = np.asarray(v.todense()) if hasattr(v, "todense") else np.asarray(v)
        if v.ndim != len(want) or any(w is not None and s != w for s, w in zip(v.shape, want, strict=True)):
            raise UserError(f"{path}: {key} has shape {v.shape}, MANO's is {want}; not a MANO file? ({MANO_URL})")
        out[key] = v
    if out["shapedirs"].shape[2] < 10 or out["hands_components"].shape[0] < 45:
        raise UserError(f"{path}: needs >= 10 shape directions and 45 hand components ({MANO_URL})")
    out["shapedirs"] = out["shapedirs"][:, :, :10].astype(np.float64)
    out["hands_components"] = out["hands_components"][:45].astype(np.float64)
    for key in ("v_template", "weights", "J_regressor", "posedirs", "hands_mean"):
        out[key] = out[key].astype(np.float64)
    out["f"] = out["f"].astype(np.int64)
    out["kintree_table"] = out["kintree_table"].astype(np.int64)
    return out


def load_mano_arrays(mano_dir: str | Path, side: str, fix_left_shapedirs: bool = False) -> tuple[dict, Path]:
    """(arrays, path) of the user's MANO model of ``side``; see the module note on left shapedirs."""
    path = find_mano_file(mano_dir, side)
    arrays = read_mano_arrays(path)
    if side == "left" and fix_left_shapedirs:
        arrays["shapedirs"] = arrays["shapedirs"].copy()
        arrays["shapedirs"][:, 0, :] *= -1
    return arrays, path
