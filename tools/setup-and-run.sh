#!/usr/bin/env bash
# README command 1: create the virtual environment, install fr-pbd with its test
# extra, build the derived models (local conversion, no network), check the machine,
# and run the main job: tools/demo.sh (fallback PIN, enrol with consent, verify yes/no/attack,
# audit, erase; in a temporary home). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip's errors only (-qq): no progress, no version nag, no warning per package about an index
# location the machine's pip configuration names but does not have; an error still shows and stops.
PIP=(.venv/bin/python -m pip -qq --disable-pip-version-check --no-input)
"${PIP[@]}" install --upgrade pip
# The TPM 2.0 key provider (tpm2-pytss, docs/tpm.md) builds against Debian's libtss2-dev:
# installed where that library is present (CI installs it), else said and skipped.
if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists tss2-esys 2>/dev/null; then
  "${PIP[@]}" install -e '.[test,tpm]'
else
  "${PIP[@]}" install -e '.[test]'
  echo "note: no libtss2-dev here, so no TPM key provider (apt-get install libtss2-dev pkg-config; docs/tpm.md)" >&2
fi
export FR_PBD_MODELS=${FR_PBD_MODELS:-../shared/models}
.venv/bin/fr-pbd models build dlib-resnet
.venv/bin/fr-pbd models build yunet-variants     # smaller detector inputs (deterministic rewrite)
.venv/bin/fr-pbd models build dlib-resnet-int8   # int8 embedder (deterministic quantisation)
.venv/bin/fr-pbd doctor
FR_PBD=.venv/bin/fr-pbd bash tools/demo.sh
