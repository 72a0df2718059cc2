"""Paths and file writing that fail cleanly: a symbolic link loop is an InputError, not a traceback,
and an output file appears under its final name only once it is complete."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError


def resolve_path(path) -> Path:
    """``Path(path).resolve()``, with a symbolic link loop (or a path that cannot be resolved) an
    :class:`InputError` naming the path."""
    try:
        return Path(path).resolve()
    except RuntimeError:  # Python 3.11/3.12 pathlib: "Symlink loop from ..."
        raise InputError(f"{path}: is or goes through a symbolic link loop (a link that points back to "
                         "itself); fix or remove the link") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be resolved ({err.strerror or err}); check the path") from None


@contextmanager
def written_atomically(path):
    """Yield a temporary path beside ``path`` to write the file to; once the block ends without error
    it is renamed onto ``path`` (``os.replace``: atomic on one file system), else removed.

    So a full disk or a crash never leaves a truncated file under the final name that a resumed run
    could trust. The temporary name is hidden and ends with the final name, so its suffix (which
    picks the format: ``.nrrd``, ``.nii.gz``, ``.seg.nrrd``) is the same. An existing read-only file
    is refused as before (a rename would replace it regardless of its permissions).
    """
    path = Path(path)
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise PermissionError(13, "Permission denied", str(path))
    if path.exists() and not path.is_file() and not path.is_dir():  # a device or pipe (/dev/stdout): in place
        try:
            yield path
        except OSError as err:
            raise _naming(err, path) from None
        return
    tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.part.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _naming(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name when it names none or the temporary (a failed write()
    names no file: "No space left on device" alone does not say which output failed)."""
    if err.filename is None or ".part." in str(err.filename):
        return type(err)(err.errno, err.strerror or str(err), str(path))
    return err


def check_distinct_outputs(outputs: dict) -> None:
    """InputError when two outputs (option -> path; None: not asked for) are one file, e.g.
    ``--json x --csv x``: the second would silently replace the first."""
    given = [(option, Path(path)) for option, path in outputs.items() if path is not None]
    for n, (option, path) in enumerate(given):
        for other_option, other in given[:n]:
            same = resolve_path(path) == resolve_path(other)
            if not same and path.exists() and other.exists():
                same = os.path.samefile(path, other)  # hard links
            if same:
                raise InputError(f"{other_option} and {option} both name {path}; the second would replace the "
                                 "first: give each its own file")
