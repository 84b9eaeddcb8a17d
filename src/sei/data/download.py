"""Downloads that cannot leave a half dataset behind.

Every file is streamed into a hidden temporary file next to its destination, its md5 is checked
against the published one (on the archive, before anything is extracted), archives are extracted into
a hidden temporary folder with every member checked to stay inside it, and only then is the result
moved into place with one ``os.replace``. So a dataset folder either does not exist or is complete:
an interruption or a corrupt file leaves at most hidden ``.partial-*`` leftovers, which the loaders
ignore and the next download removes.

URLs can be redirected to a mirror (a URL prefix, ``file://`` included, that holds the files under
their own names) with ``mirror=`` or the ``SEI_DATA_MIRROR`` environment variable.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sei.errors import SeiUserError

MIRROR_ENV = "SEI_DATA_MIRROR"
PARTIAL_PREFIX = ".partial-"
CHUNK = 1 << 20


class DownloadError(SeiUserError):
    """A download or archive that cannot be trusted; the message names the file and what to do.

    A :class:`~sei.errors.SeiUserError` so that the CLI prints one line instead of a traceback: the fix
    (retry, use a mirror, free disk space) is in the user's hands.
    """


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset as its publisher serves it.

    :param url: where the publisher serves it.
    :param md5: published checksum of the downloaded file, ``None`` where none is published (then
        ``validate`` must check the content).
    :param target: name of what ends up in the dataset folder: the extraction folder of an archive,
        or the file itself.
    :param splits: the splits that need this file (so ``--download`` fetches only what is used).
    :param validate: optional check of the downloaded file or extracted folder, raising on bad content.
    """

    url: str
    md5: str | None
    target: str
    splits: tuple[str, ...]
    validate: Callable[[Path], None] | None = None

    @property
    def filename(self) -> str:
        return PurePosixPath(self.url.split("?", 1)[0]).name

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def resolve_url(remote: RemoteFile, mirror: str | None = None) -> str:
    """The URL to fetch: the publisher's, or ``<mirror>/<filename>`` when a mirror is configured."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is None:
        return remote.url
    if "://" not in mirror:  # a local folder
        mirror = Path(mirror).resolve().as_uri()
    return f"{mirror.rstrip('/')}/{remote.filename}"


def _progress(total: int | None, label: str, enabled: bool):
    from tqdm import tqdm

    from sei.runtime import progress_enabled

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading {label.removeprefix(PARTIAL_PREFIX)}",
        disable=not (enabled and progress_enabled()),
        leave=False,
    )


def fetch(url: str, destination: Path, md5: str | None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``destination``: temporary file, md5 check, then ``os.replace``.

    The destination is never written unless the whole file arrived and matched: on any failure the
    temporary file is deleted and :class:`DownloadError` says what happened.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(
        prefix=f"{PARTIAL_PREFIX}{destination.name}.", dir=destination.parent
    )
    temporary = Path(temporary_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected_size = int(length) if length and length.isdigit() else None
            received = 0
            with _progress(expected_size, destination.name, progress) as bar:
                while chunk := response.read(CHUNK):
                    output.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected_size is not None and received != expected_size:
            raise DownloadError(
                f"{url}: connection ended after {received} of {expected_size} bytes; run the download again"
            )
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DownloadError(
                f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}); the file was deleted. "
                "Run the download again, or point SEI_DATA_MIRROR at a good copy"
            )
        os.replace(temporary, destination)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        temporary.unlink(missing_ok=True)
        raise DownloadError(
            f"cannot download {url}: {error}. Check the network, or set {MIRROR_ENV} to a mirror"
        ) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return destination


def _inside(root: Path, member: str) -> bool:
    """Whether the archive member name ``member`` lands inside ``root`` once extracted."""
    if member.startswith(("/", "\\")) or (
        len(member) > 1 and member[1] == ":"
    ):  # absolute (POSIX or Windows)
        return False
    target = (root / member).resolve()
    return target == root or root in target.parents


def check_members(archive: Path, root: Path) -> None:
    """Refuse the whole archive if any member would be written outside ``root`` (``../``, absolute
    paths, links pointing out, device files): checked before extracting anything."""
    root = root.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as opened:
            for info in opened.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if is_link or not _inside(root, info.filename):
                    raise DownloadError(
                        f"{archive.name}: refused, member {info.filename!r} escapes the target folder"
                    )
        return
    with tarfile.open(archive) as opened:
        for member in opened.getmembers():
            escapes = not _inside(root, member.name)
            if member.issym() or member.islnk():
                link_base = root / PurePosixPath(member.name).parent if member.issym() else root
                escapes = escapes or not _inside(root, str(link_base.relative_to(root) / member.linkname))
            if escapes or member.isdev():
                raise DownloadError(
                    f"{archive.name}: refused, member {member.name!r} escapes the target folder"
                )


def extract(archive: Path, folder: Path) -> None:
    """Extract ``archive`` (zip or tar, any compression) into the existing ``folder``, safely."""
    check_members(archive, folder)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(folder)
        else:
            with tarfile.open(archive) as opened:
                opened.extractall(folder, filter="data")  # second line of defence after check_members
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
        raise DownloadError(
            f"{archive.name}: cannot extract ({error}); delete it and download again"
        ) from error


def remove_partials(folder: Path) -> None:
    """Delete leftovers of interrupted downloads or extractions in ``folder``."""
    if folder.is_dir():
        for leftover in folder.glob(f"{PARTIAL_PREFIX}*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _validate(remote: RemoteFile, path: Path) -> None:
    """Run the file's content check; a failure discards the download and says so."""
    if remote.validate is None:
        return
    try:
        remote.validate(path)
    except SeiUserError as error:
        raise DownloadError(
            f"{remote.filename}: {error}; the download was discarded, run it again or use a mirror"
        ) from error


def install(
    remote: RemoteFile, folder: Path, mirror: str | None = None, progress: bool = True, force: bool = False
) -> Path:
    """Make ``folder / remote.target`` exist and be complete; return it.

    Archives are downloaded as hidden partial files, checksummed, extracted into a hidden partial
    folder, validated and renamed into place; the archive is then deleted (the extracted folder is
    what the loaders read, and DIV2K's archive alone is 3.5 GB).
    """
    folder = Path(folder)
    final = folder / remote.target
    if final.exists() and not force:
        return final
    folder.mkdir(parents=True, exist_ok=True)
    remove_partials(folder)
    url = resolve_url(remote, mirror)
    if not remote.is_archive:
        downloaded = fetch(url, folder / f"{PARTIAL_PREFIX}{remote.filename}", remote.md5, progress)
        try:
            _validate(remote, downloaded)
        except BaseException:
            downloaded.unlink(missing_ok=True)
            raise
        os.replace(downloaded, final)
        return final
    archive = fetch(url, folder / f"{PARTIAL_PREFIX}{remote.filename}", remote.md5, progress)
    staging = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{remote.target}.", dir=folder))
    try:
        extract(archive, staging)
        _validate(remote, staging)
        if final.exists():  # --force: move the old copy aside first, so the swap stays one rename
            old = folder / f"{PARTIAL_PREFIX}old-{remote.target}"
            os.replace(final, old)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        os.replace(staging, final)
    finally:
        archive.unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
    return final
