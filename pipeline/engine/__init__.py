"""Shared machinery of every job: planning, Ray scheduling and resume, the shard task, its journal and writer."""
