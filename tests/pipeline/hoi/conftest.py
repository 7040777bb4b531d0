"""HOI test constants; the fixtures ``demo_root`` (a synthetic DexYCB-layout dataset) and
``hoi_store`` (an HOI store rendered from it) live in ``tests/pipeline/conftest.py``, shared
with ``tests/pipeline/inspection/test_view.py``."""

from tests.pipeline.conftest import HOI_FRAMES as FRAMES  # noqa: F401
from tests.pipeline.conftest import HOI_RES as RES  # noqa: F401
