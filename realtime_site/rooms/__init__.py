"""Shared rooms: several people draw one picture and all watch it come alive (docs/rooms.md).

Owns the rooms and their members (models), the members' messages and their checks (``ops``), the
room's one canvas rasterised on the server (``raster``), the one process that drives a room's
inference (``election``, ``driver``), the members' WebSocket (``consumer``), the pages and the
owner's actions (``views``), and the rooms' admin.
"""
