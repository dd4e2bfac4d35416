"""Where a session's state lives: the storage root (``--storage`` / a spec's ``storage:``), checked before Ray starts.

Every piece of state a session must not lose lives in its session folder ``ROOT/<name>-<timestamp>/`` (Tune's
experiment and checkpoints, ``medtune.json``, the Q-learning journal and table, the MLflow backlog, the
active-learning annotation logs and round checkpoints, the pre-trained models) or beside it (the episodic memory
``ROOT/episodic-memory.jsonl``). ``ROOT`` is the storage root when one is given, else ``--output``. On a cluster it
must be a folder every node reaches at the same path (an NFS mount, a mounted bucket): Tune's trials write their
checkpoints there from whatever node they run on, and a driver restarted elsewhere finds the session there alone.

Accepted: a plain path or a ``file://`` URI. Object-store URIs that ``pyarrow.fs`` knows (``s3://``, ``gs://``,
``hdfs://``, ...) could hold Tune's part only: the Q-learning journal and the annotation logs are appended to and
fsynced in place, which an object store cannot do, so such a URI is refused with one line (mount the bucket and
give the path instead). Anything else is a bad scheme. Each of these is an :class:`~medtune.errors.InputError`
(exit 2) naming the value and the fix, before any trial starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from medtune.errors import InputError, did_you_mean

__all__ = [
    "LOCAL_SCHEMES", "OBJECT_SCHEMES", "SESSION_FILE", "check_writable", "find_session", "resolve_storage",
    "sessions_in", "storage_path",
]

LOCAL_SCHEMES = ("file", "local")
#: Schemes pyarrow.fs.FileSystem.from_uri understands beyond local files.
OBJECT_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
SESSION_FILE = "medtune.json"


def _example(flag: str, value: str) -> str:
    return f"{flag} {value}" if flag.startswith("--") else f"{flag}: {value}"


def storage_path(value: str, flag: str = "--storage") -> Path:
    """The local folder ``value`` names (a plain path or ``file://`` URI), without touching the disk.

    Raises:
        InputError: an object-store URI (supported for nothing but Tune's part, so refused) or an unknown scheme.
    """
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{flag} {value!r} is empty; give a folder every node can write, "
                         f"e.g. {_example(flag, '/mnt/shared/medtune')}")
    parsed = urlparse(value)
    scheme = parsed.scheme.lower()
    if len(scheme) <= 1:  # a plain path (a one-letter scheme would be a Windows drive)
        return Path(value).expanduser().resolve()
    if scheme in LOCAL_SCHEMES:
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"{flag} {value!r} names host {parsed.netloc!r}; a file:// URI must be local, "
                             f"e.g. file:///mnt/shared/medtune (mount the remote folder first)")
        return Path(parsed.path).expanduser().resolve()
    if scheme in OBJECT_SCHEMES:
        mounted = _example(flag, f"/mnt/{parsed.netloc or 'bucket'}/medtune")
        raise InputError(
            f"{flag} {value!r}: a {scheme}:// store could hold Tune's checkpoints but not the rest of the session "
            "(the Q-learning journal and annotation logs are appended in place); mount it on every node "
            f"(NFS, s3fs, gcsfuse) and give the mounted path, e.g. {mounted}"
        )
    known = LOCAL_SCHEMES + OBJECT_SCHEMES
    raise InputError(f"{flag} {value!r} has the unknown scheme {scheme!r}{did_you_mean(scheme, known)}; "
                     f"give a folder path, or a file:// URI, e.g. {_example(flag, '/mnt/shared/medtune')}")


def check_writable(path: Path, value: str, flag: str = "--storage") -> Path:
    """Create ``path`` (its parent must exist) and prove it writable with a probe file; returns ``path``.

    Raises:
        InputError: the parent is missing, ``path`` is a file, or nothing can be written there.
    """
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {value!r} is a file; give a folder every node can write")
    if not path.exists():
        if not path.parent.is_dir():
            raise InputError(f"{flag} {value!r}: its parent folder {str(path.parent)!r} does not exist; "
                             "create it (or mount the shared storage) first")
        try:
            path.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise InputError(f"{flag} {value!r} cannot be created ({exc.strerror}); "
                             "give a folder you can write, e.g. a mounted shared folder") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".medtune-write-probe-", dir=path)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{flag} {value!r} cannot be written ({exc.strerror}); "
                         "give a folder you can write (is it mounted read-only?)") from None
    return path


def resolve_storage(value: str | None, flag: str = "--storage") -> Path | None:
    """The checked, writable storage root ``value`` names, or None when none is given."""
    if value is None:
        return None
    return check_writable(storage_path(value, flag), value, flag)


def sessions_in(root: Path) -> list[Path]:
    """The session folders directly under ``root``, oldest first (by their ``medtune.json``'s time)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / SESSION_FILE).is_file()]
    return sorted(found, key=lambda p: ((p / SESSION_FILE).stat().st_mtime, p.name))


def find_session(root: Path, name: str | None = None, value: str | None = None) -> Path:
    """The session folder ``name`` under the storage ``root``, or its latest session when ``name`` is None.

    Raises:
        InputError: no such session (the nearest name suggested), or no session at all under ``root``.
    """
    shown = value or str(root)
    sessions = sessions_in(root)
    if not sessions:
        raise InputError(f"--storage {shown!r} holds no medtune session (no */{SESSION_FILE}); "
                         "give the storage the run used")
    if name is None:
        return sessions[-1]
    names = [p.name for p in sessions]
    if name not in names:
        raise InputError(f"--storage {shown!r} holds no session {name!r}{did_you_mean(name, names)}; "
                         f"its sessions: {', '.join(names[-5:])}")
    return root / name
