"""Files that hold secrets (API tokens, BMC passwords, keys): created readable by their
owner only, in folders only their owner can enter, and replaced whole.

The file is written to a temporary name created with mode 0600 (never readable by others,
not even for an instant, as a write followed by a chmod would be) and renamed over the old
one, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed; make ``path`` itself 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, text: str | bytes) -> Path:
    """Replace ``path`` with ``text``, mode 0600, in a folder of mode 0700."""
    private_dir(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:  # mkstemp creates the file 0600
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
