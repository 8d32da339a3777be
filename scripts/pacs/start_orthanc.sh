#!/usr/bin/env bash
# Start a throw-away Orthanc (with DICOMweb) in WORKDIR on loopback, wait until it answers, print
# `export PACS_...=...` lines for eval. Settings from the environment (defaults in brackets):
#   PACS_HTTP_PORT [8042]  PACS_DICOM_PORT [4242]  PACS_AET [ORTHANC]  PACS_CLIENT_AET [MRRECON]
#   PACS_USER [ci]  PACS_PASSWORD [random]  ORTHANC [/usr/sbin/Orthanc]
#   PACS_TLS=1: also serve DICOMweb over https on PACS_TLS_PORT [8443] through stunnel4 in front of the
#   loopback HTTP port (Orthanc's own SslEnabled crashes on Debian 12), with a self-signed certificate
#   for localhost/127.0.0.1 made by openssl; PACS_CA_FILE names it, PACS_TLS_DICOMWEB_URL the https root.
# The password goes to WORKDIR/password (mode 600) and is never printed: PACS_PASSWORD_FILE names it.
# Run again on the same WORKDIR to restart the same PACS (same config, same database).
set -euo pipefail
WORKDIR="${1:?usage: start_orthanc.sh WORKDIR}"
ORTHANC="${ORTHANC:-/usr/sbin/Orthanc}"
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
mkdir -p "$WORKDIR/db"
CONFIG="$WORKDIR/orthanc.json"
if [ ! -f "$CONFIG" ]; then
    HTTP_PORT="${PACS_HTTP_PORT:-8042}"; DICOM_PORT="${PACS_DICOM_PORT:-4242}"
    AET="${PACS_AET:-ORTHANC}"; CLIENT_AET="${PACS_CLIENT_AET:-MRRECON}"; USER_NAME="${PACS_USER:-ci}"
    ( umask 077; printf '%s\n' "${PACS_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}" > "$WORKDIR/password" )
    ( umask 077; cat > "$CONFIG" <<JSON
{
  "Name": "MRRECON-TEST-PACS",
  "StorageDirectory": "$WORKDIR/db",
  "IndexDirectory": "$WORKDIR/db",
  "Plugins": ["$PLUGIN"],
  "HttpServerEnabled": true, "HttpPort": $HTTP_PORT, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true, "RegisteredUsers": {"$USER_NAME": "$(head -n1 "$WORKDIR/password")"},
  "SslEnabled": false, "WebDavEnabled": false, "OrthancExplorerEnabled": false,
  "DicomServerEnabled": true, "DicomAet": "$AET", "DicomPort": $DICOM_PORT,
  "DicomCheckCalledAet": true, "DicomAlwaysAllowEcho": false, "DicomAlwaysAllowStore": false,
  "DicomAlwaysAllowFind": false, "DicomCheckModalityHost": true, "MaximumPduLength": 131072,
  "DicomModalities": {"client": {"AET": "$CLIENT_AET", "Host": "127.0.0.1", "Port": 11112,
      "AllowEcho": true, "AllowStore": true, "AllowFind": true, "AllowGet": true, "AllowMove": false}},
  "OverwriteInstances": false, "SaveJobs": false, "StableAge": 2,
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado", "Ssl": false}
}
JSON
    )
    printf '%s\n' "$HTTP_PORT" "$DICOM_PORT" "$AET" "$CLIENT_AET" "$USER_NAME" > "$WORKDIR/settings"
    if [ "${PACS_TLS:-0}" = 1 ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -keyout "$WORKDIR/key.pem" -out "$WORKDIR/cert.pem" 2>"$WORKDIR/openssl.log"
        chmod 600 "$WORKDIR/key.pem"
        printf '%s\n' "foreground = yes" "pid =" "output = $WORKDIR/stunnel.log" "[dicomweb-tls]" \
            "accept = 127.0.0.1:${PACS_TLS_PORT:-8443}" "connect = 127.0.0.1:$HTTP_PORT" \
            "cert = $WORKDIR/cert.pem" "key = $WORKDIR/key.pem" > "$WORKDIR/stunnel.conf"
        echo "${PACS_TLS_PORT:-8443}" > "$WORKDIR/tls_port"
    fi
fi
{ read -r HTTP_PORT; read -r DICOM_PORT; read -r AET; read -r CLIENT_AET; read -r USER_NAME; } < "$WORKDIR/settings"
# TCP_NODELAY=1: DCMTK (Orthanc's DICOM stack) then answers each C-STORE without Nagle delays.
TCP_NODELAY=1 "$ORTHANC" --no-jobs --logfile="$WORKDIR/orthanc.log" "$CONFIG" >"$WORKDIR/orthanc.stdout" 2>&1 &
PID=$!
echo "$PID" > "$WORKDIR/orthanc.pid"
for _ in $(seq 300); do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "Orthanc exited during start-up; its log:" >&2
        cat "$WORKDIR/orthanc.log" "$WORKDIR/orthanc.stdout" >&2 2>/dev/null || true
        exit 1
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/system" || true)"
    if [ "$code" = 401 ] || [ "$code" = 200 ]; then break; fi   # 401: up, and asking for credentials
    sleep 0.05
done
if [ "${code:-}" != 401 ] && [ "${code:-}" != 200 ]; then
    echo "Orthanc did not answer on port $HTTP_PORT within 15 s" >&2; kill "$PID"; exit 1
fi
if [ -f "$WORKDIR/stunnel.conf" ]; then
    TLS_PORT="$(cat "$WORKDIR/tls_port")"
    stunnel4 "$WORKDIR/stunnel.conf" >"$WORKDIR/stunnel.stdout" 2>&1 &
    echo $! > "$WORKDIR/stunnel.pid"
    for _ in $(seq 300); do
        if ! kill -0 "$(cat "$WORKDIR/stunnel.pid")" 2>/dev/null; then
            echo "stunnel exited during start-up; its log:" >&2
            cat "$WORKDIR/stunnel.log" "$WORKDIR/stunnel.stdout" >&2 2>/dev/null || true
            kill "$PID"; exit 1
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORKDIR/cert.pem" \
            "https://127.0.0.1:$TLS_PORT/system" || true)"
        if [ "$code" = 401 ] || [ "$code" = 200 ]; then break; fi
        sleep 0.05
    done
    if [ "$code" != 401 ] && [ "$code" != 200 ]; then
        echo "stunnel did not answer on port $TLS_PORT within 15 s" >&2; kill "$PID" "$(cat "$WORKDIR/stunnel.pid")"; exit 1
    fi
    printf '%s\n' "export PACS_TLS_URL=https://127.0.0.1:$TLS_PORT" \
        "export PACS_TLS_DICOMWEB_URL=https://127.0.0.1:$TLS_PORT/dicom-web" "export PACS_CA_FILE=$WORKDIR/cert.pem"
fi
cat <<OUT
export PACS_WORKDIR=$WORKDIR
export PACS_PID=$PID
export PACS_URL=http://127.0.0.1:$HTTP_PORT
export PACS_DICOMWEB_URL=http://127.0.0.1:$HTTP_PORT/dicom-web
export PACS_DICOM_PORT=$DICOM_PORT
export PACS_AET=$AET
export PACS_CLIENT_AET=$CLIENT_AET
export PACS_USER=$USER_NAME
export PACS_PASSWORD_FILE=$WORKDIR/password
OUT
