"""``export-sample``: one sample's arrays under the contract's names, as an .npz (no pickles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.inspection.inspect_store import open_reader


def export_npz(store: Path, index: int, out: Path) -> None:
    """Write sample ``index`` (0-based over valid samples) to ``out`` (.npz, no pickles)."""
    reader = open_reader(store)
    if not 0 <= index < len(reader):
        raise UserError(f"index {index} out of range: {store} has {len(reader)} valid samples")
    arrays = reader.read(index)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays, layers=np.array(reader.layout.layers, dtype=str), key=np.array(reader.key(index)))
    tmp.replace(out)
