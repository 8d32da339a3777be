"""Delivery to a PACS through an on-disk outbox: DIMSE C-STORE (pynetdicom) or STOW-RS (dicomweb-client).

Outbox layout (default ``<store>.outbox/``, one folder per destination)::

    <destination key>/destination.json        the destination URL (never credentials)
    <destination key>/pending/<series UID>/<SOP instance UID>.dcm
    <destination key>/acked.txt               one line per confirmed instance: SOP UID, series UID, time

An instance is written to ``pending`` (atomically) before any network traffic and leaves it only
after the PACS confirmed it: a C-STORE response status 0x0000 or a warning (0xB000, 0xB006, 0xB007),
or its SOP Instance UID in a STOW-RS ReferencedSOPSequence. The acknowledgement is appended to
``acked.txt`` (fsync) before the file is removed, so a crash between the two only causes a resend
(delivery is at least once; PACS keep one copy per SOP Instance UID, and our UIDs are deterministic,
so a resend is harmless). ``acked.txt`` also makes pushing the same series twice a no-op unless
``resend=True``.

Failures: a PACS that cannot be reached, times out, aborts the association (an empty C-STORE status
dataset) or answers HTTP 408/429/5xx is retried with exponential back-off; a progress in an attempt
resets the count. A rejected association (wrong AE title), HTTP 401/403 (credentials) or a failure
status for an instance are not retried: nothing would change. Whatever was not confirmed stays
pending and the push ends with ``DeliveryError`` naming the reason. Credentials are never logged or
printed; log lines name series and SOP UIDs and counts only, never patient attributes.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mrirecon.errors import InputError, MriReconError

from .deid import DEFAULT_PSEUDONYM
from .dicom import series_datasets, write_dataset
from .store import list_series

LOG = logging.getLogger(__name__)
PASSWORD_ENV = "MRIRECON_PACS_PASSWORD"
DEFAULT_CALLING_AET = "MRRECON"
WARNING_STATUSES = frozenset({0xB000, 0xB006, 0xB007})
RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0


class DeliveryError(MriReconError):
    """Instances could not be delivered (they stay in the outbox); exit code 3."""

    exit_code = 3


class _Transient(Exception):
    """A failure worth retrying (unreachable, timeout, aborted association, HTTP 5xx)."""


class _Permanent(Exception):
    """A failure a retry will not fix (rejected AE title, bad credentials, refused instance)."""


@dataclass(frozen=True)
class Destination:
    """Where to send: ``dicom://CALLED_AET@HOST:PORT`` or an ``http(s)://`` DICOMweb base URL."""

    url: str
    kind: str  # "dimse" or "dicomweb"
    host: str
    port: int
    called_aet: str = ""

    @property
    def key(self) -> str:
        """Folder name of this destination's queue."""
        return re.sub(r"[^A-Za-z0-9.@_-]+", "_", self.url.split("://", 1)[1]).strip("_")[:120]


def parse_destination(text: str) -> Destination:
    """Parse ``--to``; ``InputError`` for an unknown scheme or a password inside the URL."""
    parts = urlsplit(text)
    if parts.password is not None:
        raise InputError("--to", "the URL contains a password: use --password-file or "
                                 f"${PASSWORD_ENV} instead (never the command line)")
    try:
        port = parts.port
    except ValueError:
        raise InputError("--to", "the port is not a number") from None
    if parts.scheme == "dicom":
        if not parts.username or not parts.hostname or port is None:
            raise InputError("--to", "expected dicom://CALLED_AET@HOST:PORT")
        return Destination(f"dicom://{parts.username}@{parts.hostname}:{port}", "dimse",
                           parts.hostname, port, parts.username)
    if parts.scheme in ("http", "https") and parts.hostname:
        base = f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
        return Destination(base, "dicomweb", parts.hostname, port or (443 if parts.scheme == "https" else 80))
    raise InputError("--to", "expected dicom://CALLED_AET@HOST:PORT or http(s)://HOST/dicom-web")


def read_password(password_file: str | os.PathLike | None) -> str | None:
    """The password from a file (first line) or from ``$MRIRECON_PACS_PASSWORD``; None when neither."""
    if password_file is not None:
        try:
            return Path(password_file).read_text().splitlines()[0] if Path(password_file).stat().st_size else ""
        except OSError as exc:
            raise InputError(password_file, f"cannot read the password file: {exc.strerror or exc}") from None
    return os.environ.get(PASSWORD_ENV)


@dataclass
class SendOptions:
    """How to talk to the PACS. ``timeout_s`` bounds connect, association and each response."""

    calling_aet: str = DEFAULT_CALLING_AET
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | os.PathLike | None = None
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 2.0
    batch_size: int = 16


@dataclass
class PushResult:
    """Outcome of one push: instances confirmed now, skipped (confirmed before), still pending."""

    destination: str
    sent: int = 0
    skipped: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def raise_for_pending(self) -> None:
        """``DeliveryError`` when anything is left in the outbox."""
        if self.pending:
            reason = self.errors[-1] if self.errors else "not confirmed by the PACS"
            raise DeliveryError(f"{self.pending} instance(s) not delivered to {self.destination} and kept in "
                                f"the outbox ({reason}); run 'mrirecon push' again to retry")


class Outbox:
    """The on-disk queue of instances per destination (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @classmethod
    def for_store(cls, store: str | os.PathLike) -> Outbox:
        """The default outbox of a store: ``<store>.outbox`` beside it."""
        store = Path(store)
        return cls(store.with_name(store.name + ".outbox"))

    def folder(self, dest: Destination) -> Path:
        """This destination's queue folder (created with its ``destination.json``)."""
        folder = self.root / dest.key
        (folder / "pending").mkdir(parents=True, exist_ok=True)
        info = folder / "destination.json"
        if not info.exists():
            info.write_text(json.dumps({"url": dest.url}))
        return folder

    def acked(self, dest: Destination) -> set[str]:
        """SOP Instance UIDs this destination has confirmed."""
        path = self.folder(dest) / "acked.txt"
        return {line.split()[0] for line in path.read_text().splitlines() if line.strip()} if path.exists() else set()

    def enqueue(self, dest: Destination, datasets: list[Any], *, resend: bool = False) -> tuple[int, int]:
        """Queue datasets not yet confirmed (all with ``resend``); returns (queued, skipped)."""
        acked = set() if resend else self.acked(dest)
        queued = skipped = 0
        for ds in datasets:
            if ds.SOPInstanceUID in acked:
                skipped += 1
                continue
            folder = self.folder(dest) / "pending" / ds.SeriesInstanceUID
            folder.mkdir(exist_ok=True)
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            if not path.exists():
                write_dataset(ds, path)
            queued += 1
        return queued, skipped

    def pending(self, dest: Destination) -> list[Path]:
        """Queued instance files, series by series, in instance order of creation."""
        return sorted(self.folder(dest).glob("pending/*/*.dcm"), key=lambda p: (p.parent.name, p.stat().st_mtime_ns))

    def acknowledge(self, dest: Destination, path: Path) -> None:
        """Record that the PACS confirmed the instance in ``path``, then remove it from the queue."""
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        with open(self.folder(dest) / "acked.txt", "a") as fh:
            fh.write(f"{path.stem} {path.parent.name} {now}\n")
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds once the series folder is empty

    @contextlib.contextmanager
    def lock(self, dest: Destination) -> Iterator[None]:
        """Exclusive use of one destination's queue; ``DeliveryError`` if another push holds it."""
        with open(self.folder(dest) / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DeliveryError(f"another push to {dest.url} is running (outbox {self.root})") from None
            yield

    def status(self) -> list[dict[str, Any]]:
        """Per destination: URL, pending instances per series UID, confirmed count."""
        out = []
        for folder in sorted(p for p in self.root.glob("*") if (p / "destination.json").exists()):
            series = {s.name: len(list(s.glob("*.dcm"))) for s in sorted((folder / "pending").glob("*"))}
            acked = folder / "acked.txt"
            out.append({
                "destination": json.loads((folder / "destination.json").read_text())["url"],
                "pending": {k: v for k, v in series.items() if v},
                "confirmed": len(acked.read_text().splitlines()) if acked.exists() else 0,
            })
        return out


# --- senders -----------------------------------------------------------------------------------------
Ack = Callable[[Path], None]


def _send_dimse(dest: Destination, files: list[Path], opts: SendOptions, ack: Ack, errors: list[str]) -> None:
    """One association, one C-STORE per file; ``ack`` each confirmed one."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    datasets = [(path, dcmread(path)) for path in files]
    ae = AE(ae_title=opts.calling_aet)
    for sop_class in sorted({str(ds.SOPClassUID) for _, ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = opts.timeout_s
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.called_aet)
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        reason = f"association rejected by {dest.url}: {rsp.reason_str} ({rsp.result_str}, {rsp.source_str})"
        raise (_Transient if rsp.result == 0x02 else _Permanent)(reason)
    if not assoc.is_established:
        raise _Transient(f"no association with {dest.url} (connection refused or closed, or no answer "
                         f"within {opts.timeout_s:g} s)")
    try:
        for path, ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError as exc:  # no accepted presentation context for this SOP class
                raise _Permanent(f"{dest.url} refuses this kind of object: {exc}") from None
            except RuntimeError:  # the association ended (peer gone) before this instance
                status = None
            code = getattr(status, "Status", None)
            if code is None:  # an empty status dataset: the association was aborted mid-transfer
                raise _Transient(f"{dest.url} aborted the association (no C-STORE response)")
            if code == 0x0000 or code in WARNING_STATUSES:
                if code:
                    LOG.warning("C-STORE of %s: warning status 0x%04X", path.stem, code)
                ack(path)
            elif (code & 0xFF00) == 0xA700:
                raise _Transient(f"{dest.url} is out of resources (status 0x{code:04X})")
            else:
                errors.append(f"{dest.url} refused instance {path.stem} (C-STORE status 0x{code:04X})")
    finally:
        if assoc.is_established:
            assoc.release()


def _send_dicomweb(dest: Destination, files: list[Path], opts: SendOptions, ack: Ack, errors: list[str]) -> None:
    """STOW-RS in batches of ``opts.batch_size``; ``ack`` each instance the response references."""
    import requests
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    session = requests.Session()
    if opts.user is not None:
        session.auth = (opts.user, opts.password or "")
    if opts.ca_file is not None:
        session.verify = str(opts.ca_file)
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify
    client = DICOMwebClient(dest.url, session=session, timeout=(opts.timeout_s, opts.timeout_s))
    client.set_http_retry_params(retry=False)  # our own retry policy, not 5 tries with 30 s of back-off
    for start in range(0, len(files), max(1, opts.batch_size)):
        batch = {p.stem: p for p in files[start : start + opts.batch_size]}
        try:
            response = client.store_instances([dcmread(p) for p in batch.values()])
        except requests.HTTPError as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise _Permanent(f"{dest.url} refused the credentials (HTTP {code}): check --user and the "
                                 f"password file / ${PASSWORD_ENV}") from None
            raise (_Transient if code in RETRYABLE_HTTP else _Permanent)(
                f"{dest.url} answered HTTP {code} to STOW-RS") from None
        except requests.exceptions.SSLError:
            raise _Permanent(f"TLS verification of {dest.url} failed (give its CA with --ca-file)") from None
        except (requests.ConnectionError, requests.Timeout):
            raise _Transient(f"cannot reach {dest.url} (unreachable or no answer within {opts.timeout_s:g} s)") from None
        for item in getattr(response, "ReferencedSOPSequence", []):
            path = batch.pop(str(item.ReferencedSOPInstanceUID), None)
            if path is not None:
                ack(path)
        for item in getattr(response, "FailedSOPSequence", []):
            reason = getattr(item, "FailureReason", "unknown")
            errors.append(f"{dest.url} refused instance {item.ReferencedSOPInstanceUID} (failure reason {reason})")
        if batch:
            errors.append(f"{dest.url} did not confirm {len(batch)} instance(s)")


SENDERS = {"dimse": _send_dimse, "dicomweb": _send_dicomweb}


def drain(
    outbox: Outbox, dest: Destination, opts: SendOptions, *, on_sent: Callable[[str], None] | None = None
) -> PushResult:
    """Send everything pending for ``dest``, retrying transient failures with exponential back-off."""
    result = PushResult(dest.url)
    send = SENDERS[dest.kind]

    def ack(path: Path) -> None:
        outbox.acknowledge(dest, path)
        result.sent += 1
        if on_sent is not None:
            on_sent(path.stem)

    attempt = 0
    with outbox.lock(dest):
        while True:
            files = outbox.pending(dest)
            if not files:
                break
            before, errors = result.sent, []
            try:
                send(dest, files, opts, ack, errors)
            except _Permanent as exc:
                result.errors.extend([*errors, str(exc)])
                break
            except _Transient as exc:
                result.errors.extend([*errors, str(exc)])
            else:  # everything sent, or only per-instance refusals: a retry would not change them
                result.errors.extend(errors)
                break
            attempt = 0 if result.sent > before else attempt + 1
            if attempt > opts.retries:
                break
            delay = min(opts.backoff_s * 2 ** max(attempt - 1, 0), MAX_BACKOFF_S)
            LOG.info("push to %s: %d sent, retrying in %.1f s (%s)", dest.url, result.sent, delay, result.errors[-1])
            time.sleep(delay)
        result.pending = len(outbox.pending(dest))
    LOG.info("push to %s: %d instance(s) confirmed, %d pending", dest.url, result.sent, result.pending)
    return result


def push_series(
    store: str | os.PathLike,
    series: str | list[str] | None,
    destination: str | Destination,
    *,
    options: SendOptions | None = None,
    outbox: Outbox | None = None,
    raw: str | os.PathLike | None = None,
    deidentify: bool = False,
    pseudonym: str = DEFAULT_PSEUDONYM,
    resend: bool = False,
    flush_only: bool = False,
    on_sent: Callable[[str], None] | None = None,
) -> PushResult:
    """Queue series of ``store`` (one name, a list, or None = all) for ``destination``, then drain the queue.

    Identified series need ``raw`` (see ``pipelines.dicom``). ``flush_only`` queues nothing and only
    sends what is already pending. Returns the ``PushResult``; call ``raise_for_pending()`` to turn
    leftovers into ``DeliveryError``.
    """
    dest = destination if isinstance(destination, Destination) else parse_destination(destination)
    outbox = outbox or Outbox.for_store(store)
    skipped = 0
    if not flush_only:
        names = list_series(store) if series is None else [series] if isinstance(series, str) else list(series)
        for name in names:
            datasets = series_datasets(store, name, raw=raw, deidentify=deidentify, pseudonym=pseudonym)
            skipped += outbox.enqueue(dest, datasets, resend=resend)[1]
    result = drain(outbox, dest, options or SendOptions(), on_sent=on_sent)
    result.skipped = skipped
    return result
