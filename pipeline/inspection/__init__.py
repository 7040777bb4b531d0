"""Looking at a store: what it holds and what failed (``inspect_store``: the ``inspect`` command),
contact sheets and GIFs (``preview``), one sample in 3D with Rerun (``view``), one sample's arrays
as an .npz (``export``: ``export-sample``)."""
