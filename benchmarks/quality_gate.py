"""Measure reference-view coverage of real and thin objects under "bulk" and "bbox" normalisation.

Usage: .venv/bin/python benchmarks/quality_gate.py MODELS_DIR   (e.g. a checkout of mikedh/trimesh models/ or any folder of real meshes)
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.assets.mesh_io import SUPPORTED_SUFFIXES, MeshRejected, canonicalise, load_scene  # noqa: E402
from pipeline.objects.object_refs import reference_views_with_coverage  # noqa: E402
from pipeline.render.workers import worker_renderers  # noqa: E402

R = 96


def thin_objects(folder: Path) -> list[Path]:
    out = []
    def save(name, mesh):
        p = folder / f"{name}.glb"
        mesh.export(p)
        out.append(p)
    save("thin-pole_r0.01_h1", trimesh.creation.cylinder(radius=0.01, height=1.0))
    save("thin-needle_r0.003_h1", trimesh.creation.cylinder(radius=0.003, height=1.0))
    save("thin-pen_d0.01_l0.14", trimesh.creation.cylinder(radius=0.005, height=0.14))
    save("thin-sheet_1x1x0.001", trimesh.creation.box(extents=(1, 1, 0.001)))
    save("thin-paper_a4_0.0001", trimesh.creation.box(extents=(0.21, 0.297, 0.0001)))
    diag = trimesh.creation.cylinder(radius=0.01, height=1.0)
    diag.apply_transform(trimesh.transformations.rotation_matrix(np.radians(45), [1, 1, 0]))
    save("thin-pole_diagonal", diag)
    ring = trimesh.creation.torus(major_radius=0.5, minor_radius=0.004)
    save("thin-wire_ring", ring)
    # stray parts: a body plus two specks 5 body-sizes away; and two equal small parts far apart
    body = trimesh.creation.box(extents=(1, 1, 1))
    specks = [trimesh.creation.box(extents=(0.05,) * 3).apply_translation(t) for t in ([5, 0, 0], [0, -5, 0])]
    save("stray-body_plus_specks", trimesh.util.concatenate([body] + specks))
    twins = [trimesh.creation.box(extents=(0.2,) * 3).apply_translation(t) for t in ([0, 0, 0], [5, 0, 0])]
    save("stray-two_small_parts_5_apart", trimesh.util.concatenate(twins))
    return out


def main(models: Path):
    tmp = Path(tempfile.mkdtemp(prefix="quality-gate-"))
    tmp.mkdir(exist_ok=True)
    files = sorted(p for p in models.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.stat().st_size < 8e6)
    files += thin_objects(tmp)
    rend = worker_renderers(R, 40.0)
    rows = []
    for path in files:
        try:
            scene = load_scene(path, 64, 2_000_000, 256)
        except MeshRejected as e:
            rows.append({"file": path.name, "rejected": f"{e.stage}: {e.reason}"})
            continue
        row = {"file": path.name}
        for mode in ("bulk", "bbox"):
            try:
                obj = canonicalise(path.stem, scene, 2_000_000, mode)
                _, cov = reference_views_with_coverage(obj, rend.rgb, R)
                row[mode] = {"max": float(cov.max()), "min": float(cov.min()), "outside": obj.outside}
            except MeshRejected as e:
                row[mode] = {"rejected": f"{e.stage}: {e.reason}"}
            except Exception as e:  # noqa: BLE001
                row[mode] = {"error": f"{type(e).__name__}: {e}"[:100]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (tmp / "coverage.json").write_text(json.dumps(rows, indent=1))
    print(f"per-file figures: {tmp / 'coverage.json'}")
    ok = [r for r in rows if "bulk" in r and "max" in r["bulk"] and "max" in r["bbox"]]
    print(f"\n{len(files)} files, {len(ok)} rendered under both, {len(rows) - len(ok)} rejected/errored")
    for mode in ("bulk", "bbox"):
        m = np.array([r[mode]["max"] for r in ok])
        print(mode, "max-coverage percentiles 0/1/5/50%:", np.percentile(m, [0, 1, 5, 50]).round(4))
        for thr in (0.001, 0.002, 0.005, 0.01, 0.02):
            print(f"  {mode} below {thr:.1%}: {(m < thr).sum()} -> {[r['file'] for r in ok if r[mode]['max'] < thr]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
