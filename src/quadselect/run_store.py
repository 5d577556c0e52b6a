"""A run directory kept in object storage: `run_dir: s3://bucket/runs/x` (any fsspec filesystem), so a run resumes
on any machine that can read the bucket, with no shared filesystem (README, "Run directories in object storage";
docs/scaling.md).

Stages compute in a local working copy of the run directory (`RunConfig.run_dir`, under the cache folder) exactly
as in a local run, and each finished stage directory is uploaded to the store. Object stores have no atomic rename
of a folder, so publication there follows the completion-marker protocol instead: the stage's old marker is deleted
first, its files are uploaded, and its marker is written last, carrying the list of files and their sizes. A stage
counts as finished in the store only while its marker is there, so a kill during an upload leaves the stage
unfinished there, never half-published, and a reader downloads exactly the files the marker lists. Downloads land
in a `.partial` folder and are published locally by rename, as a computed stage is.

A stage that must run downloads the finished stages upstream of it first; stages finished in the store and not
needed again are not downloaded. Executor workers on other machines (Ray nodes with no shared filesystem) find the
files they read through `RunLocation`: downloaded from the store into their own machine's working copy, and the
pieces they write uploaded for the driver to collect. What is not synchronized: a stage's partial pieces on the
driver (a stage killed midway restarts from its beginning on another machine, and from its pieces on the same one).

Two machines never run one store at once: a run holds a lease, `_LOCK.json` at the store's root, created with an
exclusive write (S3's `If-None-Match: *`, a local file's O_EXCL) and renewed every `LEASE_S / 4` seconds by a thread
while the run goes on. A second run is refused with an error naming the holder; a lease not renewed for `LEASE_S`
(its holder died), or held by a process of this machine that no longer exists, is broken with a warning. Stores
without exclusive writes (some S3-compatible servers ignore the condition) give no such guarantee: there, do not
start two runs of one store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quadselect.atomic import atomic_path, publish_directory, read_json, remove_temporaries, write_json
from quadselect.data.storage import URL, explained, filesystem
from quadselect.errors import RunDirError
from quadselect.layout import MARKER, PARTIAL_SUFFIX, RunLayout
from quadselect.lock import owner_may_be_alive, pid_namespace

log = logging.getLogger(__name__)

CACHE_ENV = "QUADSELECT_CACHE"
FILES_KEY = "files"  # in the store's copy of a marker: relative path -> size in bytes of every file of the stage
DOWNLOADING = "_DOWNLOADING.json"  # in a `.partial` folder being downloaded: which fingerprint its files belong to
LOCK = "_LOCK.json"  # at the store's root while a run holds it: who, since when, last renewed when
LEASE_S = 120.0
"""A lease not renewed for this long belongs to a run that died (its holder renews it every LEASE_S / 4): a run killed
on one machine can go on on another two minutes later, at once on the same machine (its holder's pid is gone)."""


def working_copy(url: str) -> Path:
    """This machine's working copy of the run directory kept at `url`: the URL's path under the cache folder
    (`$QUADSELECT_CACHE`, default ~/.cache/quadselect), so a run kept under another (a comparison's run under its
    base run) has its working copy under the other's, as the stage links between them need."""
    match = URL.match(url.rstrip("/"))
    if match is None:
        raise ValueError(f"not a URL: {url!r}")
    parts = [p for p in match.group("rest").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"{url}: a run directory's URL names a folder below a bucket, without . or .. in its path")
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "quadselect")
    return cache.resolve() / "runs" / match.group("scheme") / Path(*parts)


class RunStore:
    """The store's side of a run directory: which stages are finished there, uploading and downloading them."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)
        self.root = self.root.rstrip("/")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def marker(self, stage: str) -> dict[str, Any] | None:
        """The stage's completion marker in the store (with its file list), or None when it is not finished there."""
        path = self._path(stage, MARKER)
        with explained(f"{self.url}/{stage}/{MARKER}"):
            if not self.fs.exists(path):
                return None
            return json.loads(self.fs.cat_file(path))  # type: ignore[no-any-return]

    def push(self, stage: str, local: Path) -> None:
        """Upload the finished local stage directory `local`: old marker off, files up, marker (with the file list)
        last."""
        marker = read_json(local / MARKER)
        files = {
            p.relative_to(local).as_posix(): p.stat().st_size
            for p in sorted(local.rglob("*"))
            if p.is_file() and p.name != MARKER
        }
        url = f"{self.url}/{stage}"
        with explained(url):
            if self.fs.exists(self._path(stage, MARKER)):
                self.fs.rm_file(self._path(stage, MARKER))
            for name in files:
                self.fs.put_file(str(local / name), self._path(stage, name))
            self.fs.pipe_file(self._path(stage, MARKER), json.dumps({**marker, FILES_KEY: files}).encode())
            pieces = self._path(f"{stage}{PARTIAL_SUFFIX}")
            if self.fs.exists(pieces):  # what workers on other machines uploaded while the stage ran
                self.fs.rm(pieces, recursive=True)
        log.info("%s: uploaded %d files (%.1f MB) to %s", stage, len(files), sum(files.values()) / 1e6, url)

    def pull(self, stage: str, layout: RunLayout) -> None:
        """Download the stage finished in the store into the working copy, publishing it there by rename; a file
        missing or of another size than the marker lists is an error (the store was changed under the run)."""
        marker = self.marker(stage)
        if marker is None:
            raise RunDirError(f"{self.url}/{stage}: not finished in the store, nothing to download.")
        files: dict[str, int] = marker.pop(FILES_KEY)
        work, final = layout.partial_dir(stage), layout.stage_dir(stage)
        tag = work / DOWNLOADING
        if work.exists() and not (tag.is_file() and read_json(tag).get("fingerprint") == marker["fingerprint"]):
            shutil.rmtree(work)  # pieces of a local computation: the store's finished stage replaces them
        work.mkdir(parents=True, exist_ok=True)
        remove_temporaries(work, recursive=True)
        write_json(tag, {"fingerprint": marker["fingerprint"]})
        url = f"{self.url}/{stage}"
        with explained(url):
            for name, size in files.items():
                dest = work / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not (dest.is_file() and dest.stat().st_size == size):  # a killed download keeps what it got
                    self.fs.get_file(self._path(stage, name), str(dest))
                if dest.stat().st_size != size:
                    raise RunDirError(
                        f"{url}/{name}: {dest.stat().st_size} bytes downloaded where the stage's marker lists {size}: "
                        f"the store was changed after the stage finished. Run again with --force {stage}."
                    )
        tag.unlink()
        write_json(work / MARKER, marker)
        publish_directory(work, final, layout.old_dir(stage))
        log.info("%s: downloaded %d files (%.1f MB) from %s", stage, len(files), sum(files.values()) / 1e6, url)

    def has(self, relative: str) -> bool:
        """Whether the store holds the file `relative` (a path inside the run directory)."""
        with explained(f"{self.url}/{relative}"):
            return bool(self.fs.exists(self._path(relative)))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the store's lease while the block runs (module docstring): a second run of the store is refused with
        an error naming the holder; a lease its holder stopped renewing is broken."""
        token = uuid.uuid4().hex
        self._acquire(token)
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(token, stop), name="quadselect-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            if (self._lease() or {}).get("token") == token:
                with explained(f"{self.url}/{LOCK}"):
                    self.fs.rm_file(self._path(LOCK))

    def _lease(self) -> dict[str, Any] | None:
        with explained(f"{self.url}/{LOCK}"):
            try:
                return json.loads(self.fs.cat_file(self._path(LOCK)))  # type: ignore[no-any-return]
            except FileNotFoundError:
                return None

    def _acquire(self, token: str) -> None:
        now = time.time()
        record = {
            "token": token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pidns": pid_namespace(),
            "since": now,
            "renewed": now,
        }
        for _ in range(2):  # a stale lease is broken once, then taken
            try:
                with explained(f"{self.url}/{LOCK}"), self.fs.open(self._path(LOCK), "xb") as fh:
                    fh.write(json.dumps(record).encode())
                return
            except FileExistsError:
                holder = self._lease()
                if holder is None:
                    continue  # released in between
                age = time.time() - float(holder.get("renewed", 0))
                alive = owner_may_be_alive({k: holder.get(k) for k in ("host", "pid", "pidns")})
                if age < LEASE_S and alive:
                    raise RunDirError(
                        f"{self.url} is being run by {holder.get('host')} (pid {holder.get('pid')}) since "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder.get('since', 0))))}; its "
                        f"lease was renewed {age:.0f} s ago. Wait for that run to finish; if its machine is gone, the "
                        f"lease expires {LEASE_S - age:.0f} s from now (or delete {self.url}/{LOCK})."
                    ) from None
                log.warning(
                    "%s: breaking the lease of %s (pid %s, renewed %.0f s ago): its run died",
                    self.url,
                    holder.get("host"),
                    holder.get("pid"),
                    age,
                )
                if (self._lease() or {}).get("token") == holder.get("token"):
                    with explained(f"{self.url}/{LOCK}"):
                        self.fs.rm_file(self._path(LOCK))
        raise RunDirError(f"{self.url}: another run took the store's lease while this one broke a stale one")

    def _renew(self, token: str, stop: threading.Event) -> None:
        """Every LEASE_S / 4 seconds until `stop`: the lease's `renewed` time, if the lease is still this run's."""
        while not stop.wait(LEASE_S / 4):
            try:
                lease = self._lease()
                if lease is None or lease.get("token") != token:
                    log.error("%s: this run lost the store's lease (another run broke it); stop one of them", self.url)
                    return
                self.fs.pipe_file(self._path(LOCK), json.dumps({**lease, "renewed": time.time()}).encode())
            except Exception as err:  # a failed renewal is retried at the next tick; the run itself goes on
                log.warning("%s: renewing the store's lease failed (%s); retrying", self.url, err)

    def put_text(self, name: str, local: Path) -> None:
        """Upload one top-level file of the run directory (the resolved config)."""
        with explained(f"{self.url}/{name}"):
            self.fs.put_file(str(local), self._path(name))


@dataclass(frozen=True)
class RunLocation:
    """Where an executor worker finds the run's files, wherever it runs: the driver's working copy (`run_dir`), the
    store it mirrors (None for a run directory on disk) and the driver's host. Plain strings, so it travels with a
    worker's arguments to another machine."""

    run_dir: str
    run_store: str | None
    driver_host: str

    @classmethod
    def of(cls, run_dir: Path, run_store: str | None) -> RunLocation:
        return cls(str(run_dir), run_store, socket.gethostname())

    def shares_disk(self) -> bool:
        """Whether this process sees the driver's working copy: always for a run directory on disk (on several
        machines it must be a shared mount); for a stored run, on the driver's host with the same cache folder."""
        if self.run_store is None:
            return True
        return socket.gethostname() == self.driver_host and working_copy(self.run_store) == Path(self.run_dir)

    def readable(self, path: str | Path) -> Path:
        """`path` (a file or folder of the driver's working copy, in a finished stage) as this process can read it:
        itself where the disk is shared, else this machine's copy, downloaded from the store the first time."""
        if self.shares_disk():
            return Path(path)
        assert self.run_store is not None
        relative = Path(path).relative_to(self.run_dir).as_posix()
        local = working_copy(self.run_store) / relative
        if not local.is_file():  # a folder is listed each time: it may hold only the files fetched alone so far
            _download(f"{self.run_store.rstrip('/')}/{relative}", local)
        return local

    def writable(self, path: str | Path) -> Path:
        """Where this process writes `path` (a piece of the driver's `.partial` folder): itself, or the same place
        in this machine's working copy, to be `uploaded` once written."""
        if self.shares_disk():
            return Path(path)
        assert self.run_store is not None
        local = working_copy(self.run_store) / Path(path).relative_to(self.run_dir)
        local.parent.mkdir(parents=True, exist_ok=True)
        return local

    def uploaded(self, path: str | Path) -> None:
        """Send a piece written at `writable(path)` to the store, where the driver `collect`s it."""
        if self.shares_disk():
            return
        assert self.run_store is not None
        relative = Path(path).relative_to(self.run_dir).as_posix()
        url = f"{self.run_store.rstrip('/')}/{relative}"
        fs, remote = filesystem(url)
        with explained(url):
            fs.put_file(str(working_copy(self.run_store) / relative), remote)

    def share(self, path: str | Path) -> None:
        """On the driver: upload a file or folder of a stage still running (its own intermediate pieces) that
        workers on other machines are about to read."""
        if self.run_store is None:
            return
        relative = Path(path).relative_to(self.run_dir).as_posix()
        url = f"{self.run_store.rstrip('/')}/{relative}"
        fs, remote = filesystem(url)
        local = Path(path)
        if local.is_dir():
            found = sorted(f for f in local.rglob("*") if f.is_file())
            files = [(f, f"{remote}/{f.relative_to(local).as_posix()}") for f in found]
        else:
            files = [(local, remote)]
        with explained(url):
            for file, destination in files:
                fs.put_file(str(file), destination)

    def collect(self, path: str | Path) -> None:
        """On the driver: fetch a piece a worker on another machine wrote and uploaded, unless it is here already."""
        if Path(path).exists() or self.run_store is None:
            return
        relative = Path(path).relative_to(self.run_dir).as_posix()
        _download(f"{self.run_store.rstrip('/')}/{relative}", Path(path))


def _download(url: str, dest: Path) -> None:
    """Download the file or folder `url` to `dest`, each file whole or not at all (written under a temporary name,
    then renamed): files already there are kept, so a folder one of whose files was fetched alone before is
    completed, and two workers of one machine fetching the same file leave one whole copy."""
    fs, path = filesystem(url)
    with explained(url):
        if fs.isdir(path):
            files = [(found, dest / Path(found).relative_to(path)) for found in fs.find(path)]
        else:
            files = [(path, dest)]
        for remote, local in files:
            if not local.is_file():
                local.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(local) as tmp:
                    fs.get_file(remote, str(tmp))
