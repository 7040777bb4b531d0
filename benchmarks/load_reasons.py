"""Load every glTF under a folder; tally (stage: reason) and show the longest details.
Usage: .venv/bin/python benchmarks/load_reasons.py DIR   (e.g. glTF-Transform test models, the Khronos glTF validator test suite)"""
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.assets.mesh_io import MeshRejected, load_object  # noqa: E402

files = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.suffix.lower() in (".glb", ".gltf"))
reasons, ok, other = Counter(), 0, []
for p in files:
    try:
        load_object(p.name, p, 64, 10**6, 64)
        ok += 1
    except MeshRejected as e:
        reasons[f"{e.stage}: {e.reason}"] += 1
    except Exception as e:  # noqa: BLE001
        other.append(f"{p.name}: {type(e).__name__}: {e}"[:200])
print(f"{len(files)} files: {ok} loaded, {sum(reasons.values())} rejected, {len(other)} escaped as exceptions")
for k, n in reasons.most_common():
    print(f"  {n:>4}  {k}")
for o in other[:10]:
    print("  ESCAPED", o)
