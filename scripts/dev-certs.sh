#!/usr/bin/env bash
# Makes a development CA and the certificates docker-compose.tls.yaml expects, with openssl:
#   scripts/dev-certs.sh [DIR] [SERVER_NAME...]     (DIR default deploy/tls; names default lace localhost)
# DIR/ca.crt        the CA: the server's issuer and the client CA (LACE_TLS_CLIENT_CA)
# DIR/server.crt|key  the gRPC server's certificate, for the names given and 127.0.0.1
# DIR/envoy.crt|key   a client certificate for Envoy's upstream (mutual TLS)
# DIR/client.crt|key  a client certificate for the CLI and client libraries
# For development and tests only: production certificates come from your own CA.
set -euo pipefail
dir=${1:-deploy/tls}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(lace localhost)
mkdir -p "$dir"
cd "$dir"
san="IP:127.0.0.1"
for n in "${names[@]}"; do san="$san,DNS:$n"; done
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=LACE development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
issue() {  # name, common name, extended key usage, extra extensions
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=$3" ${4:+"$4"} > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 365 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "${names[0]}" serverAuth "subjectAltName=$san"
issue envoy "lace-envoy" clientAuth
issue client "lace-client" clientAuth
rm -f ca.srl
chmod 600 ./*.key
echo "dev-certs: wrote ca.crt, server.crt|key (${san}), envoy.crt|key, client.crt|key to $(pwd)"
