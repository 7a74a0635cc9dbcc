#!/usr/bin/env bash
# Installs what Edgeplane's local stack needs from Debian: mosquitto (the broker), node and
# npm (the store, dynalite, is an npm package: `make install` runs `npm ci`; the CDK app of
# infra/ synthesizes through node too), ipmitool (an independent IPMI client for the
# tests), binutils (strip, for the Lambda bundle), chromium (the console's browser tests) and
# Python's venv module. Idempotent and quick when everything is already there.
set -euo pipefail

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v ipmitool >/dev/null 2>&1 || missing+=(ipmitool)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v strip >/dev/null 2>&1 || missing+=(binutils)  # the Lambda bundle's native code
# isoinfo: an independent ISO 9660 reader the tests check the gateway's NoCloud seeds with.
command -v isoinfo >/dev/null 2>&1 || missing+=(genisoimage)
# The web console's browser tests: Debian's chromium, driven by playwright; with a font.
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation)
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Edgeplane needs Python 3.11 or newer as '$python' (set PYTHON=...)." >&2
    exit 1
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=("python3-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing from apt: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "please install as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
