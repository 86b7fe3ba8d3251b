"""Example pipelines and services (run from the repository root)."""
