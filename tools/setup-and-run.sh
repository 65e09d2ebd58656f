#!/usr/bin/env bash
# README command 1: create the virtual environment, install fr-pbd with its test
# extra, build the derived models (local conversion, no network), check the machine,
# and run the main job: tools/demo.sh (fallback PIN, enrol with consent, verify yes/no/attack,
# audit, erase; in a temporary home). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
export FR_PBD_MODELS=${FR_PBD_MODELS:-../shared/models}
.venv/bin/fr-pbd models build dlib-resnet
.venv/bin/fr-pbd models build yunet-variants     # smaller detector inputs (deterministic rewrite)
.venv/bin/fr-pbd models build dlib-resnet-int8   # int8 embedder (deterministic quantisation)
.venv/bin/fr-pbd doctor
FR_PBD=.venv/bin/fr-pbd bash tools/demo.sh
