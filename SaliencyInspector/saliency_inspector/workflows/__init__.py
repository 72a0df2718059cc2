"""Workflows: demo, compare, trust, shortcut, batch — compose io, models, explainers, scoring and view; the CLI and the Slicer Logic call these."""
