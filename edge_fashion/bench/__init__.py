"""Speed, size and memory of a build's models: the runner, the per-runtime worker and the report."""
