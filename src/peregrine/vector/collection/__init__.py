"""Collections: a segment holder with its WAL, optimizer and snapshots; the database."""
