"""File and folder names made from names the user chose (class names, case ids), one file per name.

:func:`safe_name` keeps a name that is already safe in a file name (ASCII letters, digits, '.',
'-', '_') exactly as it is, so ordinary names give the same files as always. A name it has to
change (``a/b``, ``肝臓``, ``..``, a name too long for a file system) gets the changed name plus
``~`` and a short hash of the original: ``a/b`` -> ``a_b~1c9d2f3a``, while ``a_b`` stays ``a_b``.
A safe name never holds ``~``, so two different names never share a file (short of a 32-bit hash
collision, which :func:`check_distinct` refuses up front).
"""

from __future__ import annotations

import hashlib
import re

from ..errors import InputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_KEPT = 120  # characters of the name kept in a file name (file systems allow 255 bytes)


def safe_name(name) -> str:
    """``name`` usable as a file or folder name: itself when it is safe, else the name with every run
    of other characters replaced by '_' and ``~<8 hex digits of its SHA-256>`` appended (stable
    across runs and machines)."""
    name = str(name)
    cleaned = _UNSAFE.sub("_", name)[:MAX_KEPT]
    if cleaned == name and name.strip(".") != "":  # "", "." and ".." are no file names
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned or '_'}~{digest}"


def check_distinct(names, what: str = "name") -> None:
    """InputError when two of ``names`` would share one file name (see :func:`safe_name`)."""
    seen = {}
    for name in names:
        key = safe_name(name)
        if key in seen and seen[key] != name:
            raise InputError(f"{what}s {seen[key]!r} and {name!r} would share the file name {key!r}; "
                             f"rename one of them")
        seen[key] = name
