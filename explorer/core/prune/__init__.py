"""Prune: criteria (how important is a weight), granularities (which weights go together), channel groups,
the cached-ranking mask engine, global scope, and the plan with its JSON form, the recipe."""
