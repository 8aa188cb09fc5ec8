"""A command's outputs, all or nothing (docs/ARCHITECTURE.md §9): written into a staging folder, then swapped in.

``check_target`` decides, before any work, whether and how ``--out`` can take the outputs; ``write_staged``
writes them and puts them in place. Two ways to swap, chosen from the target:

* **the folder** (the usual case): the staging folder sits beside ``--out`` (same file system) and one atomic
  exchange of the two folders puts it in place (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two
  renames, which leave ``--out`` absent for an instant but never mixed);
* **the contents**, when the folder itself cannot be replaced: ``--out`` is a mount point (a CI or Docker
  volume), or its parent cannot be written. The staging folder sits inside ``--out`` and each file is
  renamed into place (each rename atomic, the set of them not: a SIGKILL in that instant can leave a mix).

Either way a failure while writing (an error, a signal, a full disk) leaves the previous outputs as they
were. The folder records what the command wrote (``.audit-outputs.json``, with the command's name); the next
run of the same command removes exactly those files and keeps everything else, and a folder holding
another command's outputs, or files named like ours that we did not write, is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit import __version__
from audit.errors import UsageError

RECORD = ".audit-outputs.json"
STAGE_SUFFIX = ".audit-"  # staging folders are named .<out name>.audit-XXXXXXXX beside (or inside) --out
ASIDE = ".previous"  # the name a folder takes for an instant where the system cannot exchange two folders


class OutputError(UsageError):
    """The outputs cannot be written where --out says (exit 2; the previous outputs are unchanged)."""


@dataclass(frozen=True)
class Target:
    """Where a command's outputs go and how they are swapped in (see the module docstring)."""

    out: Path  # absolute, symbolic links resolved (a link to a folder stays a link)
    command: str  # "run" or "compare": whose outputs the folder holds
    artefacts: tuple[str, ...]  # the names the command may write
    in_place: bool  # swap the contents, not the folder (a mount point, or a parent we cannot write)


def check_target(out: Path, command: str, artefacts: Sequence[str], flag: str = "--out") -> Target:
    """The ``Target`` for ``out``, or ``OutputError`` when it cannot take the outputs: a file, a name the file
    system refuses, the current folder or one containing it, a folder nothing can be written into, a
    folder holding another command's outputs or files named like ours that we did not write."""
    shown = Path(os.path.abspath(out))
    check_names(shown, flag)  # first: a name too long makes every look at the path fail
    real = Path(os.path.realpath(out))
    if shown.exists() and not shown.is_dir():
        raise OutputError(f"{flag} {shown} is a file, not a folder", hint="pass a folder for the reports")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f"{flag} {shown} contains the current folder", hint="choose a folder of its own for reports")
    in_place = real.is_dir() and (os.path.ismount(real) or not _can_create_in(real.parent))
    _check_writable(shown, real if in_place else real.parent, flag)
    if real.is_dir():
        other = _recorded_command(real)
        if other not in (None, command):
            raise OutputError(f"{flag} {shown} holds the outputs of `audit {other}`",
                              hint=f"choose a folder of its own for the outputs of `audit {command}`")
        theirs = sorted((set(artefacts) & {p.name for p in real.iterdir()}) - set(previous_outputs(real, artefacts)))
        if theirs:
            raise OutputError(f"{flag} {shown} already holds {', '.join(theirs)}, which the audit did not write",
                              hint="choose another folder, or move those files away")
    return Target(real, command, tuple(artefacts), in_place)


def check_names(out: Path, flag: str = "--out") -> None:
    """Each name in the path within what the file system takes (the staging folder's name is made to fit)."""
    limit = _name_max(out)
    for part in out.parts[1:]:
        if len(os.fsencode(part)) > limit:
            raise OutputError(f"{flag} {out}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes, more than "
                              f"the {limit} a file name may have here", hint="choose a shorter --out")


def _name_max(path: Path) -> int:
    for existing in path.parents:
        try:
            return os.pathconf(existing, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):
            continue
    return 255


def _can_create_in(folder: Path) -> bool:
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".audit-probe-", dir=folder))
        return True
    except OSError:
        return False


def _check_writable(out: Path, where: Path, flag: str) -> None:
    """The staging folder goes into ``where`` (``out``'s parent, or ``out`` itself when swapped in place), or
    the nearest folder above it that exists: a folder must be creatable there."""
    while not where.exists():
        where = where.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".audit-probe-", dir=where))
    except OSError as e:
        raise OutputError(f"{flag} {out}: cannot create a folder in {where} ({e.strerror or e})",
                          hint="choose an --out on a writable disk") from None


def _record(out: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        d = json.loads((out / RECORD).read_text(encoding="utf-8"))
        if isinstance(d, dict) and isinstance(d.get("files"), list):
            return d
    return None


def _recorded_command(out: Path) -> str | None:
    d = _record(out)
    return None if d is None else str(d.get("command", "run"))  # records before the command was noted: run's


LEGACY = {"verdict.json": "audit.verdict/", "comparison.json": "audit.comparison/"}  # what older versions wrote


def previous_outputs(out: Path, artefacts: Sequence[str] = ()) -> list[str]:
    """Names of the files the audit wrote into ``out`` last time (from its record, or, for a folder of an
    older version without one, the ``artefacts`` there beside the ``verdict.json`` or ``comparison.json`` it
    wrote)."""
    d = _record(out)
    if d is not None:
        return [str(f) for f in d["files"] if isinstance(f, str) and "/" not in f]
    for name, schema in LEGACY.items():
        if name not in artefacts:
            continue
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if str(json.loads((out / name).read_text(encoding="utf-8")).get("schema", "")).startswith(schema):
                return [n for n in artefacts if (out / n).is_file()]
    return []


def write_staged(target: Target, write: Callable[[Path], None], flag: str = "--out") -> list[Path]:
    """Call ``write(folder)`` on an empty staging folder, then put what it wrote in place of the previous
    outputs (see the module docstring); an ``OSError`` is an ``OutputError`` and changes nothing."""
    out = target.out
    if not target.in_place:
        out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=stage_prefix(out), dir=out if target.in_place else out.parent))
    try:
        write(stage)
        names = sorted(p.name for p in stage.iterdir())
        record = {"written_by": f"audit {__version__}", "command": target.command, "files": names}
        (stage / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if target.in_place:
            _replace_contents(stage, target, names, flag)
        else:
            _set_mode(stage, out)
            _swap(stage, target, flag)
    except OSError as e:
        raise OutputError(f"cannot write the outputs into {out}: {e.strerror or e}",
                          hint=_hint(e) + "; the previous outputs are unchanged") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / n for n in names]


def stage_prefix(out: Path) -> str:
    """``.<out name>.audit-``, the name cut (on a character boundary) so that the staging folder's name, with
    mkdtemp's 8 characters and ``.previous``, stays within 255 bytes."""
    room = 255 - len(f".{STAGE_SUFFIX}{ASIDE}") - 8
    name = os.fsencode(out.name)[:room].decode("utf-8", errors="ignore") if len(os.fsencode(out.name)) > room \
        else out.name
    return f".{name}{STAGE_SUFFIX}"


def _hint(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space or choose another --out"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "choose an --out on a writable disk"
    if e.errno in (errno.ENAMETOOLONG,):
        return "choose a shorter --out"
    return "choose another --out"


def _clashes(stage: Path, target: Target, names: Sequence[str], flag: str) -> list[str]:
    """Files in --out that the new outputs would replace but the audit did not write (checked again at the swap)."""
    ours = set(previous_outputs(target.out, target.artefacts)) | {RECORD}
    keep = [p.name for p in target.out.iterdir() if p.name not in ours and p != stage]
    clash = sorted(set(keep) & set(names))
    if clash:
        raise OutputError(f"{flag} {target.out} already holds {', '.join(clash)}, which the audit did not write",
                          hint="choose another folder, or move those files away")
    return keep


def _swap(stage: Path, target: Target, flag: str) -> None:
    """Put ``stage`` in the place of ``out``; the files in ``out`` the audit did not write move across."""
    out = target.out
    with _signals_held():
        if not out.exists():
            os.rename(stage, out)
            return
        keep = _clashes(stage, target, [p.name for p in stage.iterdir()], flag)
        _exchange(stage, out)
        for name in keep:  # stage now holds the previous outputs and the user's files
            os.rename(stage / name, out / name)


def _replace_contents(stage: Path, target: Target, names: Sequence[str], flag: str) -> None:
    """Rename each new file into ``out`` (inside ``out``: a mount point cannot be replaced), remove the previous
    run's files the new one did not write, the record last."""
    out = target.out
    with _signals_held():
        _clashes(stage, target, names, flag)
        stale = set(previous_outputs(out, target.artefacts)) - set(names)
        for name in names:
            os.replace(stage / name, out / name)
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        os.replace(stage / RECORD, out / RECORD)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (a cancelled CI job must not split the swap)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):  # not the main thread, or no pthread_sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders atomically where the system can (Linux renameat2), else with three renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    aside = a.with_name(a.name + ASIDE)
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _set_mode(stage: Path, out: Path) -> None:
    """mkdtemp makes a private folder; give it the mode the folder it replaces had (or the umask's)."""
    if out.is_dir():
        shutil.copymode(out, stage)
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)
