"""Reading a dataset's image files inside a worker: a missing or broken file is the item's
recorded failure (``StepFailed("load", ...)``), never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import StepFailed


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H,W,3] RGB of an image file (any mode PIL reads, converted)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise StepFailed("load", f"image {path.name} is missing", str(path)) from None
    except Exception as e:  # noqa: BLE001  (truncated, not an image, decompression bomb, ...)
        raise StepFailed("load", f"image {path.name} is unreadable", f"{path}: {type(e).__name__}: {e}") from None
