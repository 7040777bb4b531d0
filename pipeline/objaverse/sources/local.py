"""Local mesh folders: every supported mesh file below a folder is one object."""

from __future__ import annotations

from pathlib import Path

from pipeline.assets.mesh_io import SUPPORTED_SUFFIXES
from pipeline.errors import UserError


def list_meshes(folder: str | Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(key, absolute path) per mesh file, sorted; key = path relative to ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--source {root}: no such folder (expected a folder of {', '.join(SUPPORTED_SUFFIXES)} "
                        "files, or 'objaverse' / 'builtin')")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise UserError(f"--source {root}: no mesh files ({', '.join(SUPPORTED_SUFFIXES)}) found")
    items = [(p.relative_to(root).as_posix(), str(p.resolve())) for p in files]
    return items[:limit] if limit else items
