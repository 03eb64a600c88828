"""Flows: one plain function per use case, run on a frozen :class:`~.snapshot.Snapshot` taken on the caller's
thread; every door (the CLI, the window, lessons, benchmarks) calls the same function, and a flow never reads the
live session (see docs/ARCHITECTURE.md, "Flows")."""
