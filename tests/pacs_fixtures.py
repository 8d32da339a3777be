"""Fixtures for DICOM export and PACS tests: a reconstructed phantom store and a real Orthanc.

Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) runs through ``scripts/pacs/start_orthanc.sh`` on
free loopback ports, with HTTP basic auth and one registered calling AE title. Missing Orthanc or
dicom3tools skip the tests, unless ``PACS_REQUIRED=1`` (CI), where they fail instead.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "pacs"
ORTHANC_BIN = Path(os.environ.get("ORTHANC", "/usr/sbin/Orthanc"))
PHANTOM_SLICES = 4
PHANTOM_MATRIX = 32


def require_tool(name: str) -> str:
    """Path of executable ``name``; skip without it, or fail when ``PACS_REQUIRED=1``."""
    path = shutil.which(name) if os.sep not in name else (name if Path(name).exists() else None)
    if path is None:
        message = f"{name} is not installed (scripts/pacs/install.sh installs it)"
        if os.environ.get("PACS_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running test PACS: its addresses, credentials and a few REST helpers."""

    workdir: Path
    url: str
    dicomweb_url: str
    dicom_port: int
    aet: str
    client_aet: str
    user: str
    password_file: Path
    tls_dicomweb_url: str | None = None  # with PACS_TLS=1: https through stunnel, verified with ca_file
    ca_file: Path | None = None

    @property
    def dimse_url(self) -> str:
        return f"dicom://{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def password(self) -> str:
        return self.password_file.read_text().splitlines()[0]

    def rest(self, method: str, path: str, **kwargs):
        """An authenticated REST call to Orthanc; raises on HTTP errors."""
        import requests

        r = requests.request(method, self.url + path, auth=(self.user, self.password), timeout=5, **kwargs)
        r.raise_for_status()
        return r

    def instance_count(self) -> int:
        return int(self.rest("GET", "/statistics").json()["CountInstances"])

    def clear(self) -> None:
        """Delete every stored study."""
        for study in self.rest("GET", "/studies").json():
            self.rest("DELETE", f"/studies/{study}")

    def kill(self) -> None:
        """SIGKILL the server (keeps its database) and wait until it is gone."""
        subprocess.run([str(SCRIPTS / "stop_orthanc.sh"), str(self.workdir)], check=True, timeout=30,
                       env={**os.environ, "FAST": "1", "KEEP_WORKDIR": "1"})

    def start(self) -> None:
        """(Re)start on the same ports and database."""
        subprocess.run([str(SCRIPTS / "start_orthanc.sh"), str(self.workdir)], check=True, timeout=60,
                       capture_output=True, text=True)

    def running(self) -> bool:
        return (self.workdir / "orthanc.pid").exists()


def launch(workdir: Path, **settings: str) -> Orthanc:
    """Start ``start_orthanc.sh workdir`` on free ports with extra ``PACS_*`` settings; fail with its log."""
    env = {**os.environ, "PACS_HTTP_PORT": str(free_port()), "PACS_DICOM_PORT": str(free_port()),
           "PACS_AET": "TESTPACS", "PACS_CLIENT_AET": "MRRECONTEST", "PACS_USER": "mrirecon", **settings}
    env.pop("PACS_PASSWORD", None)  # a random one, written to WORKDIR/password only
    proc = subprocess.run([str(SCRIPTS / "start_orthanc.sh"), str(workdir)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode:
        pytest.fail(f"Orthanc did not start:\n{proc.stderr}")
    exports = dict(line.removeprefix("export ").split("=", 1) for line in proc.stdout.splitlines()
                   if line.startswith("export "))
    return Orthanc(
        workdir=workdir, url=exports["PACS_URL"], dicomweb_url=exports["PACS_DICOMWEB_URL"],
        dicom_port=int(exports["PACS_DICOM_PORT"]), aet=exports["PACS_AET"],
        client_aet=exports["PACS_CLIENT_AET"], user=exports["PACS_USER"],
        password_file=Path(exports["PACS_PASSWORD_FILE"]),
        tls_dicomweb_url=exports.get("PACS_TLS_DICOMWEB_URL"),
        ca_file=Path(exports["PACS_CA_FILE"]) if "PACS_CA_FILE" in exports else None,
    )


def shut_down(server: Orthanc) -> None:
    """SIGKILL the server (and stunnel) and delete its folder."""
    subprocess.run([str(SCRIPTS / "stop_orthanc.sh"), str(server.workdir)], timeout=30,
                   env={**os.environ, "FAST": "1"}, check=False)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Orthanc:
    """One Orthanc for the session (started once, SIGKILLed at the end)."""
    require_tool(str(ORTHANC_BIN))
    require_tool("curl")
    server = launch(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        shut_down(server)


@pytest.fixture(scope="session")
def orthanc_tls(tmp_path_factory) -> Orthanc:
    """A second Orthanc whose DICOMweb is also served over https (stunnel, self-signed localhost certificate)."""
    for tool in (str(ORTHANC_BIN), "curl", "openssl", "stunnel4"):
        require_tool(tool)
    server = launch(tmp_path_factory.mktemp("orthanc-tls"), PACS_TLS="1", PACS_TLS_PORT=str(free_port()))
    try:
        yield server
    finally:
        shut_down(server)


@pytest.fixture
def pacs(orthanc) -> Orthanc:
    """The session Orthanc, running and empty."""
    if not orthanc.running():
        orthanc.start()
    orthanc.clear()
    return orthanc


@dataclass
class ReconStore:
    """A small reconstructed phantom: raw file, Zarr store, series name, NIfTI of the same result."""

    raw: Path
    store: Path
    series: str
    nifti: Path


@pytest.fixture(scope="session")
def recon_store(tmp_path_factory) -> ReconStore:
    """A 4-slice 32x32 Shepp-Logan (2 coils) written by ``mrirecon phantom``'s code, reconstructed by zerofill."""
    from mrirecon.pipelines.reconstruct import reconstruct_file

    from mrirecon.cli import phantom_kspace, write_phantom

    folder = tmp_path_factory.mktemp("recon")
    raw = folder / "phantom.h5"
    write_phantom(raw, phantom_kspace(matrix=PHANTOM_MATRIX, slices=PHANTOM_SLICES, coils=2), "ismrmrd")
    result = reconstruct_file(raw, folder / "out.zarr", method="zerofill", device="cpu",
                              nifti=folder / "out.nii.gz", progress=False)
    return ReconStore(raw, result.store, result.series, result.nifti)
