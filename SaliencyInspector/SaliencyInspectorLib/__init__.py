"""Helpers of the SaliencyInspector Slicer module (a package, so Slicer does not take them for modules)."""
