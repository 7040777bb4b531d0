"""The store contract (arrays, layers, units, versions) and the validated configs."""

from schemas.occlusion import DEFAULT_TAU, occlusion_confidence
from schemas.store import (
    ARRAY_BY_NAME,
    ARRAYS,
    HAND_PARTS,
    HANDS,
    LAYER_NAMES,
    N_LAYERS,
    N_POINTS,
    REF_VIEW_NAMES,
    SCHEMA_VERSION,
    ArraySpec,
    SchemaError,
    StoreLayout,
    validate_sample,
)

__all__ = [
    "ARRAYS", "ARRAY_BY_NAME", "HANDS", "HAND_PARTS", "LAYER_NAMES", "N_LAYERS", "N_POINTS",
    "REF_VIEW_NAMES", "SCHEMA_VERSION", "ArraySpec", "SchemaError", "StoreLayout", "validate_sample",
    "DEFAULT_TAU", "occlusion_confidence",
]
