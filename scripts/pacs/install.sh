#!/usr/bin/env bash
# Debian packages for DICOM export validation and the real-PACS tests: Orthanc with its DICOMweb
# plugin (test PACS), dcmtk (echoscu, dcmftest) and dicom3tools (dciodvfy, dcentvfy).
# The post-install step may try to start a system Orthanc on 8042/4242; the tests never use those ports.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
    orthanc orthanc-dicomweb dcmtk dicom3tools curl
