#!/usr/bin/env bash
# Debian packages for DICOM export validation and the real-PACS tests: Orthanc with its DICOMweb
# plugin (test PACS), dcmtk (echoscu, dcmftest), dicom3tools (dciodvfy, dcentvfy), and stunnel4 + openssl
# for the DICOMweb-over-TLS tests (self-signed certificate, stunnel in front of Orthanc's loopback HTTP).
# The post-install step may try to start a system Orthanc on 8042/4242; the tests never use those ports.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
    orthanc orthanc-dicomweb dcmtk dicom3tools curl stunnel4 openssl
