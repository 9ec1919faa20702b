"""The renderers' one error type."""

from __future__ import annotations

from ..errors import DeALError


class RenderError(DeALError):
    """A trace cannot be drawn (no trace recorded, inconsistent result, bad option, missing extra)."""
