"""The one exception type for problems with what the user gave us.

The CLI turns it into a one-line message and exit code 2; the Slicer widget into an error dialog.
Anything else that escapes is a bug in SaliencyInspector, not in the user's input.
"""


class InputError(ValueError):
    """Bad user input: the message names the file or value, the problem, and what to do."""
