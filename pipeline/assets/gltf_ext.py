"""glTF specifics checked before trimesh parses a file: extensions and Draco geometry.

trimesh reads core glTF 2.0 and decodes ``KHR_draco_mesh_compression`` itself (with
DracoPy), but an extension it cannot handle leaves placeholder zeros or a bare
``KeyError``/``IndexError``. So each glTF is pre-flighted here:

  * ``extensionsRequired`` names only extensions we load (``LOADED``) or whose effect on
    the pictures is a material nuance we approximate (``APPROXIMATED``); anything else is
    refused as "unsupported glTF extension NAME" (``REFUSED`` says why, in the detail);
  * every Draco-compressed primitive is decoded once here (DracoPy, the Khronos
    extension's attribute mapping: glTF attribute name -> Draco attribute unique id), so
    a broken blob or a mapping to a missing id is a clear rejection instead of zeros.

Spec: KhronosGroup/glTF extensions/2.0/Khronos/KHR_draco_mesh_compression/README.md.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from pipeline.errors import StepFailed

DRACO = "KHR_draco_mesh_compression"
GLB_MAGIC = b"glTF"
CHUNK_JSON, CHUNK_BIN = 0x4E4F534A, 0x004E4942

# required extensions that load fully
LOADED = {
    DRACO: "Draco-compressed geometry, decoded with DracoPy",
    "KHR_materials_pbrSpecularGlossiness": "converted to metallic-roughness by trimesh",
    "EXT_texture_webp": "WebP textures, decoded by Pillow",
}
# required extensions whose absence only changes shading nuances: accepted, rendered approximately
APPROXIMATED = {
    "KHR_materials_unlit": "rendered lit",
    "KHR_materials_emissive_strength": "emission at strength 1",
    "KHR_materials_ior": "ignored", "KHR_materials_specular": "ignored", "KHR_materials_clearcoat": "ignored",
    "KHR_materials_sheen": "ignored", "KHR_materials_transmission": "rendered opaque",
    "KHR_materials_volume": "ignored", "KHR_materials_iridescence": "ignored",
    "KHR_materials_anisotropy": "ignored", "KHR_materials_dispersion": "ignored",
    "KHR_materials_variants": "the default material", "KHR_lights_punctual": "the file's lights are not used",
    "KHR_texture_transform": "texture offset/scale/rotation not applied",
}
# required extensions we refuse, and why (their data cannot be read correctly)
REFUSED = {
    "EXT_meshopt_compression": "meshopt-compressed buffers are not decoded",
    "KHR_meshopt_compression": "meshopt-compressed buffers are not decoded",
    "KHR_mesh_quantization": "quantized (normalized integer) attributes are not decoded",
    "KHR_texture_basisu": "KTX2/Basis Universal textures are not decoded",
    "EXT_mesh_gpu_instancing": "GPU instances are not expanded",
}


class GltfRejected(StepFailed):
    """A glTF the loader will not read (stage "load"); ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__("load", reason, detail)


def read_gltf(path: Path) -> tuple[dict, bytes | None]:
    """(JSON tree, GLB binary chunk or None) of a .glb/.gltf file; GltfRejected if unreadable."""
    data = Path(path).read_bytes()
    if data[:4] == GLB_MAGIC:
        if len(data) < 20:
            raise GltfRejected("cannot parse the .glb file", "truncated GLB header")
        tree, binary, pos = None, None, 12
        while pos + 8 <= len(data):
            length, kind = struct.unpack_from("<II", data, pos)
            chunk = data[pos + 8:pos + 8 + length]
            if kind == CHUNK_JSON and tree is None:
                tree = _json(chunk)
            elif kind == CHUNK_BIN and binary is None:
                binary = chunk
            pos += 8 + length + (-length % 4)
        if tree is None:
            raise GltfRejected("cannot parse the .glb file", "no JSON chunk")
        return tree, binary
    return _json(data), None


def _json(raw: bytes) -> dict:
    try:
        tree = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GltfRejected("cannot parse the glTF JSON", f"{type(e).__name__}: {e}") from None
    if not isinstance(tree, dict):
        raise GltfRejected("cannot parse the glTF JSON", "the top level is not an object")
    return tree


def check_extensions(tree: dict) -> list[str]:
    """Raise GltfRejected for a required extension we cannot honour; returns the approximated ones."""
    required = [str(n) for n in tree.get("extensionsRequired") or []]
    bad = sorted(n for n in required if n not in LOADED and n not in APPROXIMATED)
    if bad:
        raise GltfRejected(f"unsupported glTF extension{'s' if len(bad) > 1 else ''} {', '.join(bad)}",
                           "; ".join(f"{n}: {REFUSED.get(n, 'the loader does not implement it')}" for n in bad))
    return [n for n in required if n in APPROXIMATED]


def _buffer(tree: dict, index: int, binary: bytes | None, resolver) -> bytes:
    buffers = tree.get("buffers") or []
    if not 0 <= index < len(buffers):
        raise GltfRejected("broken glTF: missing buffer", f"buffer {index} of {len(buffers)}")
    uri = buffers[index].get("uri")
    if uri is None:
        if binary is None:
            raise GltfRejected("broken glTF: missing buffer", f"buffer {index} has no uri and there is no GLB chunk")
        return binary
    if uri.startswith("data:"):
        head, _, body = uri.partition(",")
        return base64.b64decode(body) if head.endswith(";base64") else body.encode()
    return resolver.get(uri)


def _view(tree: dict, index: int, binary: bytes | None, resolver) -> bytes:
    views = tree.get("bufferViews") or []
    if not isinstance(index, int) or not 0 <= index < len(views):
        raise GltfRejected("broken glTF: missing bufferView", f"bufferView {index} of {len(views)}")
    view = views[index]
    data = _buffer(tree, int(view.get("buffer", 0)), binary, resolver)
    start = int(view.get("byteOffset", 0))
    end = start + int(view["byteLength"])
    if end > len(data):
        raise GltfRejected("broken glTF: bufferView past the end of its buffer", f"bufferView {index}")
    return data[start:end]


def decode_draco_primitives(tree: dict, binary: bytes | None, resolver) -> int:
    """Decode every Draco primitive once and check its attribute mapping; returns how many.

    Per the spec, ``extensions.KHR_draco_mesh_compression = {bufferView, attributes}`` where
    ``attributes`` maps a glTF attribute name (POSITION, NORMAL, TEXCOORD_0, ...) to the
    Draco attribute's unique id; the primitive's own ``attributes``/``indices`` accessors
    describe the decoded data (their counts must match).
    """
    n = 0
    for m, mesh in enumerate(tree.get("meshes") or []):
        for p, prim in enumerate(mesh.get("primitives") or []):
            ext = (prim.get("extensions") or {}).get(DRACO)
            if ext is None:
                continue
            where = f"mesh {m} primitive {p}"
            try:
                import DracoPy
            except ImportError:
                raise GltfRejected("Draco geometry needs DracoPy", "pip install DracoPy") from None
            blob = _view(tree, ext.get("bufferView"), binary, resolver)
            try:
                decoded = DracoPy.decode(blob)
            except Exception as e:  # noqa: BLE001  (any decoder failure is this file's failure)
                raise GltfRejected("Draco data cannot be decoded", f"{where}: {type(e).__name__}: {e}") from None
            ids = {a["unique_id"] for a in decoded.attributes}
            for name, uid in (ext.get("attributes") or {}).items():
                if uid not in ids:
                    raise GltfRejected("Draco attribute mapping is broken", f"{where}: {name} -> id {uid} not in the data")
                if name not in (prim.get("attributes") or {}):
                    raise GltfRejected("Draco attribute mapping is broken", f"{where}: {name} has no accessor")
            if "POSITION" not in (ext.get("attributes") or {}):
                raise GltfRejected("Draco attribute mapping is broken", f"{where}: no POSITION")
            accessors = tree.get("accessors") or []
            pos_acc = prim["attributes"]["POSITION"]
            if 0 <= pos_acc < len(accessors) and accessors[pos_acc].get("count") != len(decoded.points):
                raise GltfRejected("Draco data does not match its accessors",
                                   f"{where}: {len(decoded.points)} points, accessor says {accessors[pos_acc].get('count')}")
            n += 1
    return n
