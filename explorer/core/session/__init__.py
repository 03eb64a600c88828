"""The session: the state the user edits, made of parts (see docs/ARCHITECTURE.md, "The session's parts")."""
from .session import LOADED, READY_LAYER_PARAMS, Session

__all__ = ["LOADED", "READY_LAYER_PARAMS", "Session"]
