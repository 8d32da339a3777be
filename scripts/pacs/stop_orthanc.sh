#!/usr/bin/env bash
# Stop the Orthanc (and its stunnel TLS front-end, if any) started by start_orthanc.sh WORKDIR
# (SIGTERM by PID, wait for it), then delete WORKDIR unless KEEP_WORKDIR=1. FAST=1 sends SIGKILL (fine for a throw-away database).
set -euo pipefail
WORKDIR="${1:?usage: stop_orthanc.sh WORKDIR}"
for name in stunnel orthanc; do
    if [ -f "$WORKDIR/$name.pid" ]; then
        PID="$(cat "$WORKDIR/$name.pid")"
        kill "-$([ "${FAST:-0}" = 1 ] && echo KILL || echo TERM)" "$PID" 2>/dev/null || true
        for _ in $(seq 200); do   # a zombie (state Z) counts as gone
            state="$(awk '{print $3}' "/proc/$PID/stat" 2>/dev/null || true)"
            if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
            sleep 0.05
        done
        rm -f "$WORKDIR/$name.pid"
    fi
done
if [ "${KEEP_WORKDIR:-0}" != 1 ]; then rm -rf "$WORKDIR"; fi
