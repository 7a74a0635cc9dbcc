"""Fetching a new version's wheel and checking it is the one the cloud meant.

The plan that asks for the upgrade is signed by the cloud, and the signature covers every
parameter of its steps, ``url`` and ``sha256`` included (``edge_gateway.trust``): so the
digest is the cloud's word on which bytes to run, and a wheel whose bytes hash otherwise is
refused, whoever served it and wherever a redirect led. The digest is computed while the
bytes stream to disk, within a bound on their size; nothing is installed before it matches.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from edge_gateway.cache.artifact import CacheError
from edge_gateway.cache.fetch import DigestMismatch, Opener, fetch, open_url
from edge_gateway.errors import GatewayError
from edgeplane.protocol import excerpt

MAX_WHEEL_BYTES = 64 * 1024 * 1024  # the gateway's wheel is ~150 KiB
MAX_UNPACKED_BYTES = 256 * 1024 * 1024  # what its files may add up to, unpacked
MAX_WHEEL_FILES = 5000
DISTRIBUTION = "edge-gateway"
COMMAND = "edge-gateway"


class ArtifactError(GatewayError):
    """The new version's wheel could not be fetched, or is not the one the plan names."""


@dataclass(frozen=True)
class Wheel:
    path: Path
    version: str


def download(url: str, sha256: str, folder: Path, max_bytes: int = MAX_WHEEL_BYTES,
             opener: Opener = open_url) -> Path:
    """Stream ``url`` to a file in ``folder``, hashing as it goes; the file, once its
    SHA-256 is ``sha256``. ArtifactError (and no file left) otherwise. The site artifact
    cache's fetch, in one try and without resuming (a wheel is small)."""
    try:
        return fetch(url, sha256, folder / f"{sha256}.partial", size=None, max_bytes=max_bytes,
                     what="gateway wheel", opener=opener, resume=False, attempts=1).path
    except DigestMismatch as exc:
        raise ArtifactError(f"{exc}, nothing installed") from None
    except CacheError as exc:
        raise ArtifactError(str(exc)) from None


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
