#!/usr/bin/env bash
# Installs the Debian 12 packages mosquitto-gdpr needs to build, test, benchmark and run its demo.
# Installs only what is missing; runs apt-get update once, first. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ca-certificates
  mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev
  libpaho-mqttpp-dev libpaho-mqtt-dev
  libssl-dev libsqlite3-dev nlohmann-json3-dev
  catch2 libbenchmark-dev libsimdjson-dev rapidjson-dev
  python3 python3-jsonschema openssl
  clang libclang-rt-14-dev
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
