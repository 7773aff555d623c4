#!/usr/bin/env bash
# make-test-pki.sh DIR: what an operator does with openssl for NTS: a CA (DIR/ca.pem) and a
# server key and certificate for 127.0.0.1 signed by it (DIR/server.key, DIR/server.pem),
# valid for 2 days. Used by the VM tests (lib.sh's make_test_pki) and the NTS bench row.
set -euo pipefail
dir=${1:?usage: make-test-pki.sh DIR}
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=clockguard-test-CA -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null \
    || { echo "openssl: cannot make the test CA" >&2; exit 1; }
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null \
    || { echo "openssl: cannot make the server's key" >&2; exit 1; }
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null \
    || { echo "openssl: cannot sign the server's certificate" >&2; exit 1; }
