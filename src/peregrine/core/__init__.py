"""Shared building blocks used by every face of Peregrine."""
