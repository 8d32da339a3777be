"""``mrirecon export`` (DICOM series from a Zarr store) and ``mrirecon push`` (to a PACS via the outbox).

Registered through ``COMMAND_MODULES`` in ``mrirecon/cli.py``; pydicom/pynetdicom are imported only
when a command runs. Passwords come from ``--password-file`` or ``$MRIRECON_PACS_PASSWORD``, never
from the command line, and are never printed.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from mrirecon.errors import InputError

AddFn = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def cmd_export(args: argparse.Namespace) -> int:
    """Write each reconstructed series of the store as a classic MR DICOM series."""
    from .dicom import export_dicom

    folders = export_dicom(
        args.store, args.dicom, series=args.series or None, raw=args.raw, deidentify=args.deidentify,
        pseudonym=args.pseudonym,
        progress=lambda name, n: print(f"wrote {n} instance(s) of {name}"),
    )
    for folder in folders:
        print(f"wrote {folder}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Queue series in the outbox and send them; or show what is pending (``--status``)."""
    from .pacs import Outbox, SendOptions, push_series, read_password

    outbox = Outbox(args.outbox) if args.outbox else Outbox.for_store(args.store)
    if args.status:
        entries = outbox.status() if outbox.root.is_dir() else []
        if not entries:
            print(f"outbox {outbox.root}: empty")
        for entry in entries:
            total = sum(entry["pending"].values())
            print(f"{entry['destination']}: {total} instance(s) pending in {len(entry['pending'])} series, "
                  f"{entry['confirmed']} confirmed")
            for uid, n in entry["pending"].items():
                print(f"  series {uid}: {n} pending")
        return 0
    if not args.to:
        raise InputError("push", "give --to URL (or --status)")
    options = SendOptions(
        calling_aet=args.calling_aet, user=args.user, password=read_password(args.password_file),
        ca_file=args.ca_file, timeout_s=args.timeout, retries=args.retries, backoff_s=args.backoff,
    )
    result = push_series(
        args.store, args.series or None, args.to, options=options, outbox=outbox, raw=args.raw,
        deidentify=args.deidentify, pseudonym=args.pseudonym, resend=args.resend, flush_only=args.flush,
    )
    print(f"{result.destination}: {result.sent} instance(s) sent, {result.skipped} already confirmed "
          f"earlier, {result.pending} pending")
    result.raise_for_pending()
    return 0


def _add_source_options(p: argparse.ArgumentParser) -> None:
    """Options shared by export and push: which series, where identities come from, de-identification."""
    p.add_argument("store", metavar="OUT.zarr", help="Zarr store written by 'mrirecon recon'")
    p.add_argument("--series", action="append", metavar="NAME", help="series name (repeatable); default all")
    p.add_argument("--raw", metavar="FILE",
                   help="the raw input file: patient/study identifiers are read from it (the store holds none)")
    p.add_argument("--deidentify", action="store_true",
                   help="apply the DICOM PS3.15 basic de-identification profile")
    p.add_argument("--pseudonym", default="ANONYMOUS", help="patient name/ID after de-identification")


def add_commands(add: AddFn) -> None:
    """Register ``export`` and ``push`` on the main parser."""
    p = add("export", cmd_export, "Export reconstructed series as classic MR DICOM series (one folder per series).")
    _add_source_options(p)
    p.add_argument("--dicom", required=True, metavar="DIR", help="folder to write the series into")

    p = add("push", cmd_push, "Send reconstructed series to a PACS (C-STORE or STOW-RS) through an on-disk outbox.")
    _add_source_options(p)
    p.add_argument("--to", metavar="URL", help="dicom://CALLED_AET@HOST:PORT or https://HOST/dicom-web")
    p.add_argument("--status", action="store_true", help="show what is pending in the outbox and exit")
    p.add_argument("--calling-aet", default="MRRECON", help="our AE title for C-STORE; default MRRECON")
    p.add_argument("--user", help="DICOMweb user (the password: --password-file or $MRIRECON_PACS_PASSWORD)")
    p.add_argument("--password-file", metavar="FILE", help="file whose first line is the DICOMweb password")
    p.add_argument("--ca-file", metavar="PEM", help="CA certificate(s) to verify an https PACS")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per connect/answer; default 30")
    p.add_argument("--retries", type=int, default=5, help="retries after a transient failure; default 5")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s (doubles); default 2")
    p.add_argument("--outbox", metavar="DIR", help="outbox folder; default OUT.zarr.outbox beside the store")
    p.add_argument("--resend", action="store_true", help="send again even what the PACS confirmed before")
    p.add_argument("--flush", action="store_true", help="only send what is already in the outbox")
