"""Field checks for reading a sequence folder: every failure is a one-line ``UserError``
"<file>: <field>: <what is wrong>" (missing file, wrong shape, wrong dtype, NaN, non-rigid pose...)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

ROT_TOL = 1e-4


def fail(file: Path | str, field: str, msg: str) -> UserError:
    return UserError(f"{file}: {field}: {msg}" if field else f"{file}: {msg}")


def load_json(path: Path) -> dict:
    if not path.is_file():
        raise fail(path, "", "missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(path, "", f"not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise fail(path, "", "must hold a JSON object")
    return data


def load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise fail(path, "", "missing") from None
    except ValueError as e:
        raise fail(path, "", f"unreadable .npy ({str(e).splitlines()[0][:80]})") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise fail(path, "", "missing") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise fail(path, "", f"unreadable .npz ({str(e).splitlines()[0][:80]})") from None


def need(data: dict, key: str, file: Path):
    if key not in data:
        raise fail(file, key, "missing")
    return data[key]


def array(value, file: Path, field: str, shape: tuple, kind: str = "float", finite_where=None) -> np.ndarray:
    """``value`` as an array of ``shape`` (None = any length) and ``kind`` ("float": any float dtype ->
    float64; "bool"; "int": any integer dtype -> int64), finite where ``finite_where`` [shape[0]] (all if None)."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        raise fail(file, field, "not a rectangular array of numbers") from None
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape, strict=False)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise fail(file, field, f"shape {tuple(a.shape)}, expected {want}")
    if kind == "bool":
        if a.dtype != bool:
            raise fail(file, field, f"dtype {a.dtype}, expected bool")
        return a
    if kind == "int":
        if not np.issubdtype(a.dtype, np.integer):
            raise fail(file, field, f"dtype {a.dtype}, expected an integer type")
        return a.astype(np.int64)
    if not (np.issubdtype(a.dtype, np.floating) or (isinstance(value, list) and np.issubdtype(a.dtype, np.integer))):
        raise fail(file, field, f"dtype {a.dtype}, expected float32/float64")
    a = a.astype(np.float64)
    rows = a if finite_where is None else a[np.asarray(finite_where, bool)]
    bad = ~np.isfinite(rows)
    if bad.any():
        where = np.argwhere(bad.reshape(len(rows), -1) if rows.ndim > 1 else bad[:, None])[0, 0]
        index = int(np.flatnonzero(finite_where)[where]) if finite_where is not None else int(where)
        what = "NaN" if np.isnan(rows).any() else "inf"
        raise fail(file, field, f"{what} at index {index}" + (" (a valid frame)" if finite_where is not None else ""))
    return a


def rigid(poses: np.ndarray, file: Path, field: str, check=None, allow_scale: bool = False) -> None:
    """``poses`` [...,4,4] must be rigid: orthonormal rotation with det +1, bottom row 0 0 0 1 (rows of
    the first axis where ``check`` is True). ``allow_scale``: a rotation times a positive uniform scale
    (an object pose that also converts the mesh's units to metres) passes too."""
    P = poses.reshape(-1, 4, 4)
    idx = np.arange(len(P)) if check is None else np.flatnonzero(np.asarray(check, bool).reshape(-1))
    if not len(idx):
        return
    Q = P[idx]
    bottom = np.abs(Q[:, 3] - [0, 0, 0, 1]).max(axis=1) > 1e-9
    R = Q[:, :3, :3]
    det = np.linalg.det(R)
    scale = np.cbrt(np.abs(det)) if allow_scale else np.ones(len(R))
    Rn = R / np.where(scale > 0, scale, 1.0)[:, None, None]
    ortho = (np.abs(Rn.transpose(0, 2, 1) @ Rn - np.eye(3)).max(axis=(1, 2)) > ROT_TOL) | (scale <= 0)
    what_ortho = ("rotation is not a rotation times a uniform scale (shear or non-uniform scale?)" if allow_scale
                  else "rotation is not orthonormal (scale or shear?)")
    for bad, what in ((bottom, "bottom row is not [0, 0, 0, 1]"), (ortho, what_ortho),
                      (det < 0, "rotation has det -1 (a mirror; axes must be right-handed)")):
        if bad.any():
            where = f" at index {int(idx[np.flatnonzero(bad)[0]])}" if poses.ndim == 3 else ""
            raise fail(file, field, what + where)
