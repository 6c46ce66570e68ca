"""A case-insensitive view of a feeder's folder, for models written on Windows.

Feeders made on Windows often name their files in one case and refer to them
in another (``Redirect LineCodes.DSS`` for ``linecodes.dss``): OpenDSS on
Linux then stops at the first such file.
:class:`CaseInsensitiveView` mirrors the master's folder into a temporary
folder of symbolic links (the feeder's own files are never touched) and, for
each "file not found" OpenDSS reports, adds a link under the name the feeder
used to the file whose name differs only in case.
The feeder is then compiled from the mirror; OpenDSS reads every file while
compiling, so the mirror is removed right after.

The folder above the master's is linked too (many feeders share line codes
one level up: ``Redirect ../IEEELineCodes.DSS``); a reference whose case is
wrong further out is reported as OpenDSS reported it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

# The path OpenDSS could not open: the first quoted name of its message, and
# the innermost file holding the reference ("[file: ...]" lines, innermost first).
_QUOTED = re.compile(r'"([^"\n]+)"')
_CONTAINING = re.compile(r'\[file: "([^"\n]+)", line: \d+\]')
_NOT_FOUND = re.compile(r"not found|could not be opened|unable to open|cannot open", re.I)
MAX_FIXES = 2000


class CaseInsensitiveView:
    """A temporary mirror of ``folder`` (and links to its parent's entries)."""

    def __init__(self, folder: Path) -> None:
        self.real = folder.resolve()
        self.root = Path(tempfile.mkdtemp(prefix="dsosim-feeder-"))
        self.mirror = self.root / (self.real.name or "feeder")
        self.fixed: list[tuple[str, str]] = []
        """(name as the feeder wrote it, the file it found), in order."""
        try:
            for entry in _entries(self.real.parent):
                if entry.resolve() != self.real:
                    (self.root / entry.name).symlink_to(entry.resolve())
            self._mirror(self.real, self.mirror)
        except OSError:
            self.close()
            raise

    def path_of(self, real_file: Path) -> Path:
        """Where a file of the real folder is in the mirror."""
        return self.mirror / real_file.resolve().relative_to(self.real)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def fix(self, message: str) -> bool:
        """Add a link for the file an OpenDSS "not found" ``message`` names, if
        a file whose name differs only in case exists; False if none does."""
        target = missing_file(message)
        if target is None or len(self.fixed) >= MAX_FIXES:
            return False
        wanted = next(iter(_QUOTED.findall(message.split("\n[file:")[0])), str(target))
        if os.path.lexists(target):
            return False
        found = self._resolve(target)
        if found is None:
            return False
        self.fixed.append((wanted, str(found)))
        return True

    # ------------------------------------------------------------- internals

    def _mirror(self, src: Path, dst: Path) -> None:
        dst.mkdir()
        for entry in _entries(src):
            if entry.is_dir() and not entry.is_symlink():
                self._mirror(entry, dst / entry.name)
            else:
                (dst / entry.name).symlink_to(entry.resolve())

    def _ours(self, folder: Path) -> bool:
        real = os.path.realpath(folder)
        return real == os.path.realpath(self.root) or real.startswith(
            os.path.realpath(self.root) + os.sep
        )

    def _resolve(self, target: Path) -> Path | None:
        """Walk ``target``, linking each name whose case differs to the entry
        it means (inside the mirror only); the real file, or None."""
        parts = Path(os.path.normpath(target)).parts
        current = Path(parts[0])
        for part in parts[1:]:
            step = current / part
            if not os.path.lexists(step):
                match = _case_match(current, part)
                if match is None or not self._ours(current):
                    return None
                # a folder links to its mirror (further fixes go inside it)
                step.symlink_to(match if match.is_dir() else match.resolve())
            current = step
        return current.resolve()


def missing_file(message: str) -> Path | None:
    """The file an OpenDSS "not found" message names, as a path (resolved
    against the file holding the reference); None if it names none."""
    if not _NOT_FOUND.search(message.split("\n[file:")[0]):
        return None
    wanted = next(iter(_QUOTED.findall(message.split("\n[file:")[0])), None)
    if wanted is None:
        return None
    holders = _CONTAINING.findall(message)
    if os.path.isabs(wanted):
        return Path(wanted)
    return Path(holders[0]).parent / wanted if holders else None


def holder_file(message: str) -> Path | None:
    """The innermost file holding the reference an OpenDSS message is about."""
    holders = _CONTAINING.findall(message)
    return Path(holders[0]) if holders else None


def case_variant(path: Path) -> Path | None:
    """An existing file whose path differs from ``path`` only in case."""
    parts = Path(os.path.normpath(path)).parts
    current = Path(parts[0])
    for part in parts[1:]:
        step = current / part
        if not os.path.lexists(step):
            match = _case_match(current, part)
            if match is None:
                return None
            step = match
        current = step
    return current if current.is_file() else None


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _case_match(folder: Path, name: str) -> Path | None:
    lower = name.lower()
    matches = [e for e in _entries(folder) if e.name.lower() == lower]
    return matches[0] if matches else None
