"""Segments: the unit of storage, search and optimisation, and what they search with."""
