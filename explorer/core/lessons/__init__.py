"""Lessons: the lecture as a guided walk-through (lesson.py: the file format; values.py: the live numbers;
steps.py: setting a step up on a session, measuring and drawing it)."""
