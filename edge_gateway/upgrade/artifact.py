"""Fetching a new version's wheel and checking it is the one the cloud meant.

The plan that asks for the upgrade is signed by the cloud, and the signature covers every
parameter of its steps, ``url`` and ``sha256`` included (``edge_gateway.trust``): so the
digest is the cloud's word on which bytes to run, and a wheel whose bytes hash otherwise is
refused, whoever served it and wherever a redirect led. The digest is computed while the
bytes stream to disk, within a bound on their size; nothing is installed before it matches.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from edge_gateway import __version__
from edge_gateway.errors import GatewayError
from edgeplane.protocol import excerpt

MAX_WHEEL_BYTES = 64 * 1024 * 1024  # the gateway's wheel is ~150 KiB
MAX_UNPACKED_BYTES = 256 * 1024 * 1024  # what its files may add up to, unpacked
MAX_WHEEL_FILES = 5000
CHUNK_BYTES = 64 * 1024
READ_TIMEOUT = 30.0  # seconds without a byte before the download is given up
DISTRIBUTION = "edge-gateway"
COMMAND = "edge-gateway"

Opener = Callable[..., Any]  # urllib.request.urlopen


class ArtifactError(GatewayError):
    """The new version's wheel could not be fetched, or is not the one the plan names."""


@dataclass(frozen=True)
class Wheel:
    path: Path
    version: str


def download(url: str, sha256: str, folder: Path, max_bytes: int = MAX_WHEEL_BYTES,
             opener: Opener = urllib.request.urlopen) -> Path:
    """Stream ``url`` to a file in ``folder``, hashing as it goes; the file, once its
    SHA-256 is ``sha256``. ArtifactError (and no file left) otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{sha256}.partial"
    digest = hashlib.sha256()
    size = 0
    if not url.lower().startswith(("http://", "https://")):
        raise ArtifactError(f"{excerpt(url)} is not an http:// or https:// URL")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url, headers={"User-Agent": f"edge-gateway/{__version__}"})
    try:
        with opener(request, timeout=READ_TIMEOUT) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ArtifactError(f"{excerpt(url)} is {int(length)} bytes; a gateway wheel "
                                    f"may have {max_bytes}")
            while chunk := response.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise ArtifactError(f"{excerpt(url)} sent more than {max_bytes} bytes; a "
                                        "gateway wheel may have that many")
                digest.update(chunk)
                out.write(chunk)
    except ArtifactError:
        partial.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"downloading {excerpt(url)} failed: HTTP {exc.code} "
                            f"{exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ArtifactError(f"downloading {excerpt(url)} failed: {reason}") from None
    found = digest.hexdigest()
    if found != sha256:
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"the file at {excerpt(url)} ({size} bytes) has SHA-256 {found}, "
                            f"not {sha256} as the plan says: refused, nothing installed")
    return partial


def check_wheel(path: Path, version: str) -> Wheel:
    """The downloaded file as a wheel of the gateway at ``version``, renamed as pip wants
    a wheel named (``<name>-<version>-<tag>.whl``); ArtifactError saying what it is not."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_WHEEL_FILES:
                raise ArtifactError(f"the wheel has {len(entries)} files; at most "
                                    f"{MAX_WHEEL_FILES}")
            if sum(entry.file_size for entry in entries) > MAX_UNPACKED_BYTES:
                raise ArtifactError(f"the wheel unpacks to more than {MAX_UNPACKED_BYTES} bytes")
            names = [entry.filename for entry in entries]
            unsafe = [n for n in names if n.startswith("/") or ".." in n.split("/")]
            if unsafe:
                raise ArtifactError(f"the wheel has a file outside its folder: "
                                    f"{excerpt(unsafe[0])}")
            info = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(
                ".dist-info")})
            if len(info) != 1:
                raise ArtifactError(f"the file is not a wheel (it has {len(info)} .dist-info "
                                    "folders; a wheel has one)")
            metadata = HeaderParser().parsestr(_text(archive, f"{info[0]}/METADATA"))
            tags = [line.split(":", 1)[1].strip() for line in
                    _text(archive, f"{info[0]}/WHEEL").splitlines() if line.startswith("Tag:")]
            entry_points = _text(archive, f"{info[0]}/entry_points.txt", required=False)
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"the file is not a wheel (not a zip archive: {exc})") from None
    name = re.sub(r"[-_.]+", "-", str(metadata.get("Name", ""))).lower()
    if name != DISTRIBUTION:
        raise ArtifactError(f"the wheel is of {excerpt(metadata.get('Name'))}, not of "
                            f"{DISTRIBUTION}")
    if metadata.get("Version") != version:
        raise ArtifactError(f"the wheel holds version {excerpt(metadata.get('Version'))}, not "
                            f"{version} as the plan says")
    if not tags or not re.fullmatch(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+", tags[0]):
        raise ArtifactError("the wheel names no tag (its WHEEL file has no Tag line)")
    if not re.search(rf"^\s*{COMMAND}\s*=", entry_points, flags=re.MULTILINE):
        raise ArtifactError(f"the wheel has no {COMMAND} command")
    named = path.with_name(f"{info[0].removesuffix('.dist-info')}-{tags[0]}.whl")
    path.replace(named)
    return Wheel(named, version)


def _text(archive: zipfile.ZipFile, name: str, required: bool = True) -> str:
    try:
        info = archive.getinfo(name)
    except KeyError:
        if required:
            raise ArtifactError(f"the wheel has no {name}") from None
        return ""
    if info.file_size > 1024 * 1024:
        raise ArtifactError(f"the wheel's {name} is over 1 MiB")
    return archive.read(info).decode("utf-8", "replace")
