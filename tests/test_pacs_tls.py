"""STOW-RS over TLS to a real Orthanc behind stunnel: the CA file is used, and only the CA file.

The server certificate is self-signed for localhost/127.0.0.1 (``start_orthanc.sh`` with ``PACS_TLS=1``),
so it verifies only against ``--ca-file``; the system bundle and ``REQUESTS_CA_BUNDLE`` do not know it.
"""
from __future__ import annotations

import certifi
import pytest
import requests
from mrirecon.pipelines.dicom import series_datasets
from mrirecon.pipelines.pacs import Outbox, parse_destination, push_series
from pacs_fixtures import PHANTOM_SLICES
from test_pacs import fast, stored_pixels

from mrirecon.cli import main


@pytest.fixture
def tls_pacs(orthanc_tls):
    """The TLS Orthanc, empty."""
    orthanc_tls.clear()
    return orthanc_tls


def test_stow_over_https_with_ca_file_round_trips_pixels(recon_store, tls_pacs, tmp_path):
    result = push_series(recon_store.store, recon_store.series, tls_pacs.tls_dicomweb_url,
                         options=fast(tls_pacs, ca_file=tls_pacs.ca_file), outbox=Outbox(tmp_path / "outbox"),
                         raw=recon_store.raw)
    assert (result.sent, result.pending, result.errors) == (PHANTOM_SLICES, 0, [])
    assert tls_pacs.instance_count() == PHANTOM_SLICES
    for ds in series_datasets(recon_store.store, recon_store.series, raw=recon_store.raw):
        assert stored_pixels(tls_pacs, ds.SOPInstanceUID) == ds.PixelData


def test_https_without_ca_file_is_a_clear_certificate_error(recon_store, tls_pacs, tmp_path, capsys):
    outbox = tmp_path / "outbox"
    password_file = tmp_path / "pw"
    password_file.write_text(tls_pacs.password + "\n")
    args = ["push", str(recon_store.store), "--to", tls_pacs.tls_dicomweb_url, "--user", tls_pacs.user,
            "--password-file", str(password_file), "--raw", str(recon_store.raw), "--timeout", "5",
            "--retries", "2", "--backoff", "0.05", "--outbox", str(outbox)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "TLS verification" in err and "--ca-file" in err and "Traceback" not in err
    dest = parse_destination(tls_pacs.tls_dicomweb_url)
    assert len(Outbox(outbox).pending(dest)) == PHANTOM_SLICES  # nothing left the outbox
    assert tls_pacs.instance_count() == 0
    # the same outbox drains once the CA file is given
    assert main([*args, "--flush", "--ca-file", str(tls_pacs.ca_file)]) == 0
    assert Outbox(outbox).pending(dest) == [] and tls_pacs.instance_count() == PHANTOM_SLICES


def test_ca_file_wins_over_requests_ca_bundle(recon_store, tls_pacs, tmp_path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # a real bundle without our CA
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    # The pitfall this guards against: a plain session with verify=CA still reads the environment.
    session = requests.Session()
    session.verify = str(tls_pacs.ca_file)
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        session.get(tls_pacs.tls_dicomweb_url.removesuffix("/dicom-web") + "/system", timeout=5)
    result = push_series(recon_store.store, recon_store.series, tls_pacs.tls_dicomweb_url,
                         options=fast(tls_pacs, ca_file=tls_pacs.ca_file), outbox=Outbox(tmp_path / "outbox"),
                         raw=recon_store.raw)
    assert (result.sent, result.pending, result.errors) == (PHANTOM_SLICES, 0, [])
    assert tls_pacs.instance_count() == PHANTOM_SLICES
