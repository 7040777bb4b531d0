"""Read pickles that hold torch tensors (TACO's hand files) safely, without torch.

A tensor pickled with plain ``pickle`` is ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)`` whose storage is ``torch.storage._load_from_bytes(b)``, ``b`` being a
legacy-format ``torch.save`` of the whole backing storage (a row of a [N,48] tensor carries
all N rows). ``TensorUnpickler`` maps those two functions to numpy equivalents that parse
the bytes directly (no ``torch.load``, so nothing is restored to a GPU and no code runs),
allows numpy arrays and plain containers, and refuses every other global.

``LazyTensorUnpickler`` is the same with decoding deferred: each tensor is a ``LazyTensor``
holding its storage bytes and view, decoded by ``np.asarray(t)`` when used (a file of many
small tensors, e.g. OakInk2's per-frame annotation, parses about twice as fast, and only
the frames read are decoded).
"""

from __future__ import annotations

import collections
import io
import pickle

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C   # torch.serialization.MAGIC_NUMBER (legacy format)
_STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                   "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
                   "ByteStorage": "u1", "CharStorage": "i1", "BoolStorage": "?"}
_NUMPY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _PlainUnpickler(pickle.Unpickler):
    """Numpy arrays and plain containers only; inside a storage record, torch storage
    classes become their names and the persistent id is returned as is."""

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (tensors, arrays, containers only)")

    def persistent_load(self, pid):
        return pid


def _storage_from_bytes(b: bytes) -> np.ndarray:
    """A pickled torch storage (``torch.storage._load_from_bytes`` payload: the legacy
    ``torch.save`` format, whatever device it was saved from) -> flat numpy array.
    Layout: magic, protocol, sys-info pickles; the storage's persistent id
    ('storage', <type>, key, location, numel, ...); the key list; int64 numel and the raw
    little-endian elements."""
    f = io.BytesIO(b)
    if _PlainUnpickler(f).load() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("a tensor storage is not in torch's legacy format")
    _PlainUnpickler(f).load()
    _PlainUnpickler(f).load()
    pid = _PlainUnpickler(f).load()
    _PlainUnpickler(f).load()
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES):
        raise pickle.UnpicklingError(f"unexpected tensor storage record {str(pid)[:80]}")
    n = int(np.frombuffer(f.read(8), "<i8")[0])
    dtype = np.dtype(_STORAGE_DTYPES[pid[1]])
    data = np.frombuffer(f.read(n * dtype.itemsize), dtype)
    if n != int(pid[4]) or len(data) != n:
        raise pickle.UnpicklingError("truncated tensor storage")
    return data


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2`` on a numpy storage: the strided view, copied."""
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if len(size) != len(stride) or min(stride, default=0) < 0 or (min(size, default=1) > 0 and last >= len(storage)):
        raise pickle.UnpicklingError("tensor view outside its storage")
    return np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride]).copy()


class LazyTensor:
    """A pickled torch tensor not decoded yet: ``np.asarray(t)`` (or ``t.numpy()``) decodes it
    exactly as ``TensorUnpickler`` would (same checks, a copy)."""

    __slots__ = ("_payload", "_view")

    def __init__(self, payload: bytes, view: tuple):
        self._payload, self._view = payload, view

    def numpy(self) -> np.ndarray:
        return _rebuild_tensor(_storage_from_bytes(self._payload), *self._view)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)


class _LazyStorage(bytes):
    """The raw payload of ``torch.storage._load_from_bytes`` (decoded later by ``LazyTensor``)."""


def _lazy_tensor(storage, offset, size, stride, *_):
    if not isinstance(storage, _LazyStorage):
        raise pickle.UnpicklingError("a tensor without a pickled storage")
    return LazyTensor(storage, (offset, tuple(size), tuple(stride)))


class TensorUnpickler(pickle.Unpickler):
    """Restricted unpickler: pickled torch tensors become numpy arrays (storages decoded by
    ``_storage_from_bytes``), numpy arrays and plain containers pass; any other global raises
    ``UnpicklingError`` (a file cannot run code). Use: ``TensorUnpickler(file).load()``."""

    _TORCH = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
        ("torch._tensor", "_rebuild_from_type_v2"): lambda func, _type, args, _state: func(*args),
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("torch", "Tensor"): "Tensor", ("torch.nn.parameter", "Parameter"): "Parameter",
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._TORCH:
            return self._TORCH[(module, name)]
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (tensors, arrays, containers only)")


class LazyTensorUnpickler(TensorUnpickler):
    """``TensorUnpickler`` whose tensors are ``LazyTensor`` (decoded on ``np.asarray``)."""

    _TORCH = {**TensorUnpickler._TORCH,
              ("torch._utils", "_rebuild_tensor_v2"): _lazy_tensor,
              ("torch.storage", "_load_from_bytes"): _LazyStorage}
