"""The Objaverse job: sources (objaverse, objaverse-xl, a mesh folder, the builtin demo), trajectories, rendering a sample."""
