"""CIFAR's "python version" archives, downloaded once into a cache, as torchvision does.

`--data cifar10` (or `cifar100`) with no directory fetches the archive from its published URL into
the data directory, checks the published MD5, and unpacks the batches there; every later run
finds them and touches no network:

    $RESDSL_DATA_DIR            where archives are unpacked; default: data/ in resdsl's cache
                                directory ($RESDSL_CACHE_DIR, else $XDG_CACHE_HOME/resdsl or
                                ~/.cache/resdsl), e.g. ~/.cache/resdsl/data/cifar-10-batches-py
    RESDSL_CIFAR10_URL / _MD5   another source (a mirror, a local copy served over http) and, for
    RESDSL_CIFAR100_URL / _MD5  an archive that is not the published one, its MD5

The download is untrusted until its checksum matches: it is written to a `.part` file beside
the cache (never more than RESDSL_MAX_DOWNLOAD_BYTES), unpacked only after the MD5 matches, and
then only the members a CIFAR archive holds, with tarfile's "data" filter, into a temporary
directory that is renamed into place. A failure at any step leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ..diagnostics import ResdslError, printable
from ..files import brief
from ..limits import BOUNDS, LIMITS
from ..resources import cache_root


@dataclass(frozen=True)
class Archive:
    kind: str
    url: str
    md5: str
    folder: str  # the one directory the archive unpacks to
    members: tuple[str, ...]  # the files resdsl unpacks from it
    extras: tuple[str, ...]  # files the published archive also holds, never unpacked


ARCHIVES = {
    "cifar10": Archive("cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
                        ("readme.html",)),
    "cifar100": Archive("cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                         "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
                         ("train", "test", "meta"), ("file.txt~",)),
}
CHUNK = 1 << 20


def data_directory() -> Path:
    """Where downloaded datasets live: $RESDSL_DATA_DIR, else data/ in resdsl's cache directory
    (an empty RESDSL_CACHE_DIR, which turns the TVM line cache off, cannot turn off a download's
    destination)."""
    explicit = os.environ.get("RESDSL_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return cache_root() / "data"


# Given the URL and its size where the server says it, a context around the download whose value
# is told each chunk's length.
Progress = Callable[[str, "int | None"], AbstractContextManager[Callable[[int], None]]]


def cifar_directory(kind: str, progress: Progress | None = None) -> Path:
    """The directory of `kind`'s unpacked batches, downloading and unpacking them if absent."""
    archive = _configured(kind)
    root = data_directory()
    target = root / archive.folder
    if target.is_dir():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResdslError(f"cannot create the data directory {printable(str(root))}: {exc.strerror}",
                          hint="set RESDSL_DATA_DIR to a directory you can write") from None
    with _scratch(root, archive) as (part, unpacked):
        _download(archive, part, progress or terminal_progress)
        _unpack(archive, part, unpacked)
        try:
            os.rename(unpacked / archive.folder, target)
        except OSError:
            if not target.is_dir():  # another process (a torchrun rank) put it there first: fine
                raise ResdslError(f"cannot move the unpacked {kind} into {printable(str(root))}",
                                  hint="check the data directory's permissions") from None
    return target


def _configured(kind: str) -> Archive:
    """The archive with its URL and MD5 from the environment where set, each checked."""
    archive = ARCHIVES[kind]
    prefix = _variable(archive)
    url = os.environ.get(f"{prefix}_URL") or archive.url
    md5 = (os.environ.get(f"{prefix}_MD5") or archive.md5).strip().lower()
    if not re.fullmatch(r"https?://[^\s]+", url):
        raise ResdslError(f"{prefix}_URL={printable(repr(brief(url, 80)))} is not an http(s) URL",
                          hint=f"unset it to download from {archive.url}")
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ResdslError(f"{prefix}_MD5={printable(repr(brief(md5, 80)))} is not an MD5 (32 hex digits)",
                          hint=f"unset it to check the published {archive.md5}")
    return replace(archive, url=url, md5=md5)


@contextmanager
def _scratch(root: Path, archive: Archive) -> Iterator[tuple[Path, Path]]:
    """A `.part` file for the download and a directory to unpack into, both beside the cache (so
    the last step is a rename) and named per process, both removed whatever happens."""
    name = archive.url.rsplit("/", 1)[-1] or "archive"
    try:
        fd, part = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".part")
        os.close(fd)
        unpacked = tempfile.mkdtemp(dir=root, prefix=f".{archive.folder}.")
    except OSError as exc:
        raise ResdslError(f"cannot write in {printable(str(root))}: {exc.strerror}",
                          hint="set RESDSL_DATA_DIR to a directory you can write") from None
    try:
        yield Path(part), Path(unpacked)
    finally:
        Path(part).unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)


def _download(archive: Archive, part: Path, progress: Progress) -> None:
    """The archive into `part`, bounded, its MD5 checked against the expected one."""
    import http.client
    import urllib.error
    import urllib.request
    cap, url = LIMITS.max_download_bytes, archive.url
    too_large = ResdslError(f"{printable(url)} is larger than resdsl downloads ({cap:,} bytes)",
                            hint=f"raise {BOUNDS['max_download_bytes'].variable} if you really mean it")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > cap:  # refused before a byte is read
                raise too_large
            with progress(url, total) as advance:
                done = 0
                while chunk := response.read(CHUNK):
                    done += len(chunk)
                    if done > cap:
                        raise too_large
                    digest.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise ResdslError(f"cannot download {printable(url)}: HTTP {exc.code} {printable(str(exc.reason))}",
                          hint=_elsewhere(archive)) from None
    except urllib.error.URLError as exc:
        raise ResdslError(f"cannot download {printable(url)}: {printable(str(exc.reason))}",
                          hint=_elsewhere(archive)) from None
    except OSError as exc:  # a reset connection, a timeout, a full disk
        raise ResdslError(f"cannot download {printable(url)}: {printable(str(exc))}",
                          hint=_elsewhere(archive)) from None
    except (http.client.HTTPException, ValueError) as exc:  # a cut-off or malformed response
        raise ResdslError(f"cannot download {printable(url)}: {type(exc).__name__}",
                          hint=_elsewhere(archive)) from None
    if digest.hexdigest() != archive.md5:
        raise ResdslError(
            f"the download from {printable(url)} has MD5 {digest.hexdigest()}, not the expected "
            f"{archive.md5}; nothing was unpacked",
            hint=f"run again (a download can be damaged on the way); for an archive other than the "
                 f"published one, set {_variable(archive)}_MD5 to its checksum")


def _variable(archive: Archive) -> str:
    """The prefix of the environment variables that override the archive's URL and MD5."""
    return f"RESDSL_{archive.kind.upper()}"


def _elsewhere(archive: Archive) -> str:
    return (f"check the network, set {_variable(archive)}_URL to a mirror, or download the python "
            f"version yourself and give its directory (--data cifar10:DIR)")


def _unpack(archive: Archive, part: Path, into: Path) -> None:
    """The archive's CIFAR members into `into`; any other member, a link, a second copy of a name
    or a member larger than RESDSL_MAX_DATA_BYTES refuses the whole archive."""
    seen: set[str] = set()
    try:
        with tarfile.open(part, "r:gz") as tar:
            for member in tar:
                name = _member_name(archive, member, seen)
                if name in archive.members:
                    tar.extract(member, into, filter="data")
    except ResdslError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ResdslError(f"cannot unpack the download from {printable(archive.url)} "
                          f"({type(exc).__name__}: {brief(str(exc))})",
                          hint="is it the python version's .tar.gz?") from None
    missing = [name for name in archive.members if name not in seen]
    if missing:
        raise _refused(archive, f"lacks {archive.folder}/{missing[0]}")


def _member_name(archive: Archive, member: tarfile.TarInfo, seen: set[str]) -> str | None:
    """A member's name inside the archive's folder, after checking it is one a CIFAR archive has."""
    path = member.name.rstrip("/")
    if path == archive.folder and member.isdir():
        return None
    folder, _, name = path.partition("/")
    if folder != archive.folder or name not in archive.members + archive.extras:
        raise _refused(archive, f"holds `{brief(member.name)}`, which no {archive.folder} archive holds")
    if name in seen:
        raise _refused(archive, f"holds {archive.folder}/{name} twice")
    seen.add(name)
    if name in archive.members and not member.isreg():
        raise _refused(archive, f"holds {archive.folder}/{name} as a link or a special file")
    if member.size > LIMITS.max_data_bytes:
        raise _refused(archive, f"holds {archive.folder}/{name} of {member.size:,} bytes, more than a "
                                f"dataset file may be ({BOUNDS['max_data_bytes'].variable})")
    return name


def _refused(archive: Archive, problem: str) -> ResdslError:
    return ResdslError(f"the download from {printable(archive.url)} {problem}; nothing was unpacked",
                       hint=f"is {_variable(archive)}_URL the python version's archive?")


@contextmanager
def terminal_progress(url: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A line saying what is downloaded and where; on a terminal, a live bar under it while the
    download lasts (transient: the training display follows)."""
    size = f" ({total / (1 << 20):.0f} MiB)" if total else ""
    print(f"downloading {printable(url)}{size} into {printable(str(data_directory()))}",
          file=sys.stderr, flush=True)
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
    with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("download", total=total)
        yield lambda n: bar.update(task, advance=n)
