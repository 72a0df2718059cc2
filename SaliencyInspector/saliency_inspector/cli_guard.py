"""Output safety for the CLI: every sub-command, new ones included, checks its outputs with
:func:`guard_outputs` before any heavy work, so a run never overwrites its own inputs and never
learns after the forward pass that it cannot write; training never writes over the shipped models.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .io.files import resolve_path


def guard_outputs(inputs=(), files=(), folders=()) -> None:
    """Refuse, before any heavy work, outputs that cannot be written or that would replace an input.

    ``inputs``: every path the sub-command reads (CT, map, masks, model, card, names table…; a
    folder input such as a DICOM series counts with the files directly in it; ``None`` entries are
    skipped). ``files``: every output file it will write. ``folders``: every output folder it
    will write into (tried here, so that "cannot create" or "cannot write" is found now and not
    after the forward pass; folders made only for the check are removed again). Paths are compared resolved, symlinks followed, and by inode where both exist, so
    ``--json map.nrrd``, ``--out`` through a symlink or a hard link are all caught.

    Raises :class:`InputError` (one line, exit code 2 at the CLI) when an output file is an input,
    an output file exists as a folder, an output folder exists as a file or is an input, or a
    folder cannot be created or written to. A sub-command that learns its file names late (e.g.
    ``explain``, after reading the model card) calls this again with them before writing.
    """
    ins = _input_paths(inputs)
    for folder in [Path(f) for f in folders if f is not None]:
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder; give --out a folder")
        if _is_one_of(folder, ins):
            raise InputError(f"{folder}: is one of this command's inputs; give --out another folder")
    for path in [Path(f) for f in files if f is not None]:
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a file name for this output")
        if _is_one_of(path, ins):
            raise InputError(f"{path}: is one of this command's inputs and would be overwritten; "
                             "choose another output name")
    for folder in list(dict.fromkeys([Path(f) for f in folders if f is not None] +
                                     [Path(f).parent for f in files if f is not None])):
        _writable_folder(folder)


def _input_paths(inputs) -> list:
    out = []
    for item in inputs:
        if item is None:
            continue
        path = Path(item)
        out.append(path)
        if path.is_dir():  # a DICOM folder: its files are inputs too (not its sub-folders: not read)
            out += [p for p in path.iterdir() if p.is_file()]
    return out


def _is_one_of(path: Path, inputs) -> bool:
    resolved = resolve_path(path)  # a symbolic link loop: one error line, not a traceback
    for other in inputs:
        if resolved == resolve_path(other):
            return True
        try:
            if path.exists() and other.exists() and os.path.samefile(path, other):  # hard links
                return True
        except OSError:
            pass
    return False


def _writable_folder(folder: Path) -> None:
    """Check that ``folder`` can be created and written to; folders made for the check are removed
    again, so a run refused later (bad option, bad input) leaves nothing behind."""
    import tempfile

    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{folder}: cannot be made a folder (a part of the path is a file); "
                         "choose another output location") from None
    except OSError as err:
        raise InputError(f"{folder}: cannot write here ({err.strerror or err}); choose a folder you can "
                         "write to") from None
    finally:
        for made in missing:  # innermost first
            try:
                made.rmdir()
            except OSError:
                break


def refuse_shipped_models(out) -> None:
    """Training never writes into the shipped Resources/Models (it would silently replace them)."""
    from .models.demo_model import MODELS_DIR

    if Path(out).resolve() == Path(MODELS_DIR).resolve():
        raise InputError(f"{out}: is the folder of the shipped demo model (and the shortcut models); train "
                         "into another folder and copy the files there yourself if you mean to replace them")
