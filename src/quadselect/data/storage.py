"""Inputs in object storage: `data.*.path` may be the URL of any fsspec filesystem (`s3://`, `gs://`, `az://`,
`hf://`, ...) as well as a local path (README, "Inputs in object storage").

A URL names a file or a folder (a prefix); it is read through fsspec, whose filesystems take credentials from the
usual chain of their cloud (for S3: environment variables, `~/.aws`, an instance role; `AWS_ENDPOINT_URL` for an
S3-compatible server). Credentials are never part of a URL quadselect accepts, so they never reach a config dump,
a fingerprint, a log line or an error message. What can go wrong before a byte is read becomes an `InputDataError`
naming the URL and what to do: no filesystem installed for the scheme, no credentials, a bucket or key that does not
exist, access refused.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import fsspec
from fsspec.spec import AbstractFileSystem

from quadselect.errors import InputDataError

URL = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<rest>.*)$")
CREDENTIALS_IN_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]*@")
# The package that brings each common scheme's filesystem (fsspec knows the schemes, but not what to install).
PACKAGE_FOR_SCHEME = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "hf": "huggingface_hub",
}


def is_url(value: object) -> bool:
    """Whether `value` is a URL with a scheme (`s3://bucket/key`), as opposed to a local path."""
    return isinstance(value, str) and URL.match(value) is not None and not value.startswith("file://")


def check_url(value: str) -> str:
    """A URL as the config keeps it; refused when it carries credentials (`s3://key:secret@bucket/...`), which
    would otherwise be written into the resolved config, every fingerprint and the logs."""
    match = URL.match(value)
    assert match is not None
    if "@" in match.group("rest").split("/", 1)[0]:
        raise ValueError(
            f"a {match.group('scheme')}:// URL with credentials in it: give credentials through the environment or "
            "the store's config files, never in the config"
        )
    return value


def redact_url_credentials(text: str) -> str:
    """`text` with the user-info part of every URL in it (`//key:secret@`) masked, for messages."""
    return CREDENTIALS_IN_URL.sub(r"\1***@", text)


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the path inside it."""
    match = URL.match(url)
    scheme = match.group("scheme") if match else "file"
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        package = PACKAGE_FOR_SCHEME.get(scheme, f"the fsspec filesystem for {scheme}://")
        raise InputDataError(
            f"{url}: reading {scheme}:// needs {package} ({exc}). Install it: pip install {package}"
        ) from None
    except ValueError as exc:
        raise InputDataError(
            f"{url}: no filesystem is known for {scheme}:// ({exc}). Use a local path or a scheme fsspec knows "
            "(s3://, gs://, az://, hf://, http://, ...)."
        ) from None


@contextlib.contextmanager
def explained(url: str) -> Iterator[None]:
    """Turn a storage failure into an error that names the URL and what to do (never the credentials)."""
    try:
        yield
    except FileNotFoundError as exc:
        raise InputDataError(f"{url}: not found ({_first_line(exc)}). Check the bucket and the key.") from None
    except PermissionError as exc:
        raise InputDataError(
            f"{url}: access refused ({_first_line(exc)}). Check that your credentials may read it."
        ) from None
    except Exception as exc:
        if _missing_credentials(exc):
            raise InputDataError(
                f"{url}: no credentials found. Set them the usual way for this store (for S3: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an instance role; AWS_ENDPOINT_URL for an "
                "S3-compatible server)."
            ) from None
        raise


def _missing_credentials(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def is_dir(url: str) -> bool:
    fs, path = filesystem(url)
    with explained(url):
        if fs.isdir(path):
            return True
        fs.info(path)  # a file: fine; neither: FileNotFoundError, explained
    return False


def list_files(url: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files under the folder `url` whose names end with one of `suffixes`, as sorted URLs."""
    fs, path = filesystem(url)
    with explained(url):
        found = fs.find(path)
    return sorted(fs.unstrip_protocol(p) for p in found if p.lower().endswith(suffixes))


def open_binary(url: str) -> BinaryIO:
    """A file of the store, opened for reading (streamed in blocks, not downloaded whole)."""
    fs, path = filesystem(url)
    with explained(url):
        return fs.open(path, "rb")  # type: ignore[no-any-return]


def file_info(url: str) -> dict[str, Any]:
    """Size and the store's own content tag of one file (S3's ETag, GCS's md5/crc32c, ...): what fingerprints a
    remote input without reading it twice."""
    fs, path = filesystem(url)
    with explained(url):
        info = fs.info(path)
    tag = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "crc32c", "sha256", "mtime") if info.get(k)), "")
    return {"size": int(info.get("size") or 0), "tag": tag.strip('"')}


def url_name(url: str) -> str:
    """The last component of a URL (a file's name, or a folder's)."""
    return url.rstrip("/").rsplit("/", 1)[-1]
