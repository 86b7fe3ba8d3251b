"""The only part of Peregrine that knows wire formats.

``edge.http`` is the shared HTTP edge (routing, keys, limits, metrics,
traces, streaming); each other package is one protocol mounted on it and
translates between its wire format and the faces' front doors.
"""
