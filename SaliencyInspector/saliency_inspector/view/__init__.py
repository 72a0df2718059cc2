"""Pictures and pages: PNG slices and 3D renders, the HTML report."""
