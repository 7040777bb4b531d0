"""From a recorded sequence to T-frame clips, shared by the hand-object and human jobs: which source
frames make each window (``windows``), the square crop fixed per clip and its intrinsics (``crop``),
undistorting a recorded image to its pinhole camera (``lens``)."""
