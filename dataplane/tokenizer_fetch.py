"""A worker's tokenizer, shipped by its ``GetTokenizer`` RPC, verified and unpacked into the cache.

The worker streams a zip of its tokenizer directory in chunks; the last chunk carries the SHA-256 (hex)
of the whole zip. Before anything is written the digest must match, and every entry must be a regular
file at a plain relative path (no absolute path, no ``..``, no backslash or drive, no symlink), within
SMG's bounds on entries and sizes. The files land in ``$SMG_CACHE_DIR/tokenizers/<sha256>/`` (default
``~/.cache/smg-py``), renamed into place whole, so a directory there is always complete and the same
bundle is unpacked once per machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dataplane.errors import ConfigError

# SMG's limits (crates/grpc_client/src/tokenizer_bundle.rs).
MAX_BUNDLE_BYTES = 200 * 1024 * 1024
MAX_ENTRIES = 50
MAX_UNCOMPRESSED_BYTES = 500 * 1024 * 1024


class BundleError(ConfigError):
    """A tokenizer bundle that is refused: wrong digest, unsafe entry, too large, not a tokenizer."""

    code = "invalid_tokenizer_bundle"


@dataclass(frozen=True, slots=True)
class TokenizerBundle:
    """The zip a worker sent, and the SHA-256 it claims for it."""

    data: bytes
    sha256: str


def cache_root() -> Path:
    return Path(os.environ.get("SMG_CACHE_DIR") or Path.home() / ".cache" / "smg-py")


def install(bundle: TokenizerBundle, root: Path | None = None) -> Path:
    """Verify ``bundle`` and unpack it (once) into the tokenizer cache; the directory it is in."""
    digest = verify(bundle)
    target = (root or cache_root()) / "tokenizers" / digest
    if (target / "tokenizer.json").is_file():
        return target
    try:
        archive = zipfile.ZipFile(io.BytesIO(bundle.data))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"the tokenizer bundle is not a zip archive: {exc}") from exc
    with archive:
        members = safe_members(archive)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=target.parent))
        try:
            for info in members:
                dest = partial.joinpath(*PurePosixPath(info.filename).parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, dest.open("wb") as out:
                    try:
                        shutil.copyfileobj(src, out)  # bounded by the declared size, checked by CRC
                    except zipfile.BadZipFile as exc:
                        raise BundleError(f"tokenizer bundle entry {info.filename!r}: {exc}") from exc
            try:
                partial.rename(target)
            except OSError:
                if not (target / "tokenizer.json").is_file():  # not another process's finished copy
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def verify(bundle: TokenizerBundle) -> str:
    """The bundle's digest, after checking it against the one the worker sent."""
    if not bundle.data:
        raise BundleError("the worker sent an empty tokenizer bundle")
    if len(bundle.data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"tokenizer bundle of {len(bundle.data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    claimed = bundle.sha256.strip().lower()
    if not claimed:
        raise BundleError("the tokenizer bundle ended without its SHA-256")
    actual = hashlib.sha256(bundle.data).hexdigest()
    if actual != claimed:
        raise BundleError(f"tokenizer bundle SHA-256 mismatch: the worker sent {claimed}, got {actual}")
    return actual


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's files, after refusing the whole archive for any unsafe entry."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BundleError(f"tokenizer bundle has {len(infos)} entries (at most {MAX_ENTRIES})")
    if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED_BYTES:
        raise BundleError(f"tokenizer bundle unpacks to more than {MAX_UNCOMPRESSED_BYTES} bytes")
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        _check_path(name)
        mode = info.external_attr >> 16
        if info.is_dir():
            continue
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: written without unix modes
            kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
            raise BundleError(f"tokenizer bundle entry {name!r} is {kind}")
        if name in seen:
            raise BundleError(f"tokenizer bundle has {name!r} twice")
        seen.add(name)
        files.append(info)
    if "tokenizer.json" not in seen:
        raise BundleError("tokenizer bundle has no tokenizer.json at its top level")
    return files


def _check_path(name: str) -> None:
    parts = PurePosixPath(name).parts
    if (
        not name
        or "\\" in name
        or "\0" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or any(p in ("..", ".") for p in parts)
    ):
        raise BundleError(f"tokenizer bundle entry {name!r} has an unsafe path")
