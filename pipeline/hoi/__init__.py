"""Hand-object interaction datasets -> HOI stores (adapters, MLO rendering, demo data, preview)."""
