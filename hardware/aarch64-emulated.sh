#!/usr/bin/env bash
# fr-pbd on aarch64 (the Raspberry Pi / Jetson instruction set) under emulation (issue 16, item 3).
#
# Builds an arm64 Debian bookworm root with Debian's debootstrap and qemu-user-static,
# installs fr-pbd there from a commit of this checkout together with the aarch64 PyPI
# wheels of numpy, opencv-python-headless, onnxruntime, cryptography and threadpoolctl (the versions
# of the x86 .venv), and runs, inside the arm64 root:
#   1. fr-pbd --version and fr-pbd doctor,
#   2. an enrol/verify with the shared test photos (fallback PIN, enrol obama.jpg +
#      obama2.jpg, verify obama3.jpg / obama4.jpg / biden2.jpg / astronaut.png),
#   3. the templates of 20 LFW images (hardware/aarch64_templates.py extract),
# and the same 2. and 3. on x86_64 from the same commit, then compares: the same
# answers, cosine >= 0.9999 per image, the same yes/no per LFW pair.
#
# Timings under emulation are NOT board timings: qemu-user translates every aarch64
# instruction on the x86 host (in the recorded run the 20 LFW templates took 1103 s under
# emulation and 0.9 s natively on the same, busy, 2-core host). The wall times it prints
# say how long the proof takes, nothing about a board.
#
# Usage (as root, Debian/Ubuntu host with binfmt_misc; run from anywhere):
#   FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data \
#     nice -n 15 bash hardware/aarch64-emulated.sh [--rev REV] [--root DIR] [--fresh] [--no-record]
#
#   --rev REV    the commit to install on both sides (default HEAD; uncommitted edits
#                are not used: both sides run `git archive REV`)
#   --root DIR   the arm64 root (default /tmp/frpbd-arm64/root; kept between runs, and
#                reused: debootstrap runs only when DIR has no finished root)
#   --fresh      delete DIR first (a from-scratch run: debootstrap + pip included)
#   --no-record  do not write hardware/results/aarch64-emulated-<date>.{json,log}
# Exit 0: every check passed; 1: a check failed; 2: set-up failed.
#
# Nothing here is copied into git but the two result files: the arm64 root, the model
# files, the LFW images and both template files stay under the work directory (the
# template files are deleted at the end).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
REV=HEAD
ROOT=/tmp/frpbd-arm64/root
FRESH=0
RECORD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rev) REV="$2"; shift 2 ;;
    --root) ROOT="$2"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --no-record) RECORD=0; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

MODELS="$(cd "${FR_PBD_MODELS:-$REPO/../shared/models}" && pwd)"
DATA="$(cd "${FR_PBD_DATA:-$REPO/../shared/data}" && pwd)"
X86_PY="$REPO/.venv/bin/python"
WORK="$(dirname "$ROOT")"
LOG="$WORK/run.log"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIN="fr-pbd-emulated-123456"   # a throwaway fallback PIN for a throwaway home
T_START=$(date +%s)

die() { echo "aarch64-emulated: $*" >&2; exit 2; }
step() { echo; echo "== $* ($(( $(date +%s) - T_START )) s)"; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, binfmt_misc)"
[ -x "$X86_PY" ] || die "no $X86_PY: run tools/setup-and-run.sh first (the x86 side and the model build)"
[ -f "$DATA/lfw/pairs.txt" ] && [ -d "$DATA/faces" ] || die "no test data in $DATA (set FR_PBD_DATA)"
COMMIT="$(git -C "$REPO" rev-parse --verify "$REV^{commit}")" || die "no commit $REV"
mkdir -p "$WORK"
exec > >(tee "$LOG") 2>&1

step "host tools"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
dpkg-query -W -f='${Package} ${Version}\n' qemu-user-static debootstrap

step "binfmt_misc: qemu-aarch64"
# The kernel runs arm64 ELF files through qemu-aarch64-static once it is registered with
# the F (fix-binary) flag: the interpreter is opened at registration, so it works inside
# the chroot, for every child process (pip, the CLI) without naming qemu.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "binfmt_misc cannot be mounted here: this script needs it (see hardware/README.md)"
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || die "qemu-aarch64 is not registered in binfmt_misc (update-binfmts --enable qemu-aarch64)"
grep -E '^(interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64

if [ "$FRESH" = 1 ] && [ -d "$ROOT" ]; then
  step "--fresh: removing $ROOT"
  for m in dev/pts dev sys proc; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
  rm -rf --one-file-system "$ROOT"
fi

if [ ! -f "$ROOT/.frpbd-debootstrap-done" ]; then
  step "debootstrap arm64 bookworm into $ROOT"
  rm -rf --one-file-system "$ROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  touch "$ROOT/.frpbd-debootstrap-done"
else
  step "arm64 root: reusing $ROOT (--fresh to rebuild)"
fi
T_ROOT=$(date +%s)

cleanup() {
  for m in dev/pts dev sys proc; do mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"; done
  rm -f "$WORK/x86-templates.json" "$ROOT/opt/fr-pbd/arm64-templates.json"
}
trap cleanup EXIT
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
# No /sys: it would be the x86 host's, and onnxruntime's arm64 cpuinfo parses
# /sys/devices/system/cpu and crashes under qemu-user (SIGSEGV on import). Without it, it
# warns "cpuinfo_initialize failed" and runs its default arm64 kernels.
mountpoint -q "$ROOT/sys" && umount -l "$ROOT/sys"
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"   # pip reaches PyPI from inside the root

in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/fr-pbd/venv/bin:/usr/bin:/bin LANG=C.UTF-8 \
  FR_PBD_MODELS=/opt/fr-pbd/models FR_PBD_DATA=/opt/fr-pbd/data "$@"; }
echo "arm64 root: $(in_root /usr/bin/uname -m), $(cat "$ROOT/etc/debian_version"), $(in_root /usr/bin/python3 -V)"

step "source: git archive $COMMIT (both sides)"
rm -rf "$ROOT/opt/fr-pbd/src" "$WORK/x86-src"
mkdir -p "$ROOT/opt/fr-pbd/src" "$WORK/x86-src"
git -C "$REPO" archive "$COMMIT" | tar -x -C "$ROOT/opt/fr-pbd/src"
git -C "$REPO" archive "$COMMIT" | tar -x -C "$WORK/x86-src"
[ -f "$WORK/x86-src/hardware/aarch64_templates.py" ] || die "commit $COMMIT has no hardware/aarch64_templates.py"
x86() { env PYTHONPATH="$WORK/x86-src/src" FR_PBD_MODELS="$MODELS" FR_PBD_DATA="$DATA" "$X86_PY" "$@"; }
x86 -c "import fr_pbd, sys; assert fr_pbd.__file__.startswith('$WORK/x86-src/'), fr_pbd.__file__"

step "models: the verified files the x86 side uses (no model is built on the arm64 side)"
rm -rf "$ROOT/opt/fr-pbd/models"; mkdir -p "$ROOT/opt/fr-pbd/models"
x86 - "$ROOT/opt/fr-pbd/models" <<'EOF'
import shutil, sys
from fr_pbd import models
for name in models.manifest():
    try:
        path = models.resolve(name).path  # hash-checked
    except Exception as exc:  # an optional model that is not here (e.g. sface): the arm64 side lacks it too
        print(f"  {name}: not copied ({type(exc).__name__})")
        continue
    shutil.copy2(path, sys.argv[1])
    print(f"  {name}: {path.name}")
EOF

step "data: the unit-test photos and the 20 LFW images"
rm -rf "$ROOT/opt/fr-pbd/data"; mkdir -p "$ROOT/opt/fr-pbd/data/lfw"
cp -r "$DATA/faces" "$ROOT/opt/fr-pbd/data/faces"
cp "$DATA/lfw/pairs.txt" "$ROOT/opt/fr-pbd/data/lfw/"
x86 - "$DATA/lfw" "$ROOT/opt/fr-pbd/data/lfw" "$WORK/x86-src/hardware" <<'EOF'
import shutil, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from aarch64_templates import lfw_pairs
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for a, b, _, _ in lfw_pairs(src, 5):
    for name in (a, b):
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, dst / name)
EOF

step "pip: fr-pbd $COMMIT and the aarch64 wheels of the x86 versions"
PINS="$("$X86_PY" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("numpy", "opencv-python-headless", "onnxruntime", "cryptography",
                                             "threadpoolctl")))
EOF
)"
echo "pins: $PINS"
[ -x "$ROOT/opt/fr-pbd/venv/bin/python" ] || in_root /usr/bin/python3 -m venv /opt/fr-pbd/venv
# The host's CA bundle, for a host whose traffic passes a TLS-inspecting proxy (its CA is
# trusted on the host, not in the fresh root): pip in the root verifies PyPI with it.
PIP_ENV=()
HOST_CA="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
if [ -f "$HOST_CA" ]; then
  cp -L "$HOST_CA" "$ROOT/opt/fr-pbd/host-ca-bundle.crt"
  PIP_ENV=(PIP_CERT=/opt/fr-pbd/host-ca-bundle.crt)  # env, not --cert: pip's build-isolation child needs it too
fi
# --only-binary: a source build under emulation would take hours; a missing aarch64 wheel is a finding.
in_root /usr/bin/env "${PIP_ENV[@]}" pip install -q --disable-pip-version-check --only-binary=numpy,opencv-python-headless,onnxruntime,cryptography \
  $PINS
in_root /usr/bin/env "${PIP_ENV[@]}" pip install -q --disable-pip-version-check --force-reinstall --no-deps /opt/fr-pbd/src
in_root pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(fr-pbd|numpy|opencv-python-headless|onnxruntime|cryptography|threadpoolctl) '
T_INSTALL=$(date +%s)

step "arm64: fr-pbd --version, doctor"
in_root fr-pbd --version
set +e
in_root fr-pbd doctor | tee "$WORK/doctor.txt"
DOCTOR_RC=${PIPESTATUS[0]}
set -e
echo "doctor exit $DOCTOR_RC"

# enrol/verify through the CLI, as tests/test_verify.py drives it; prints "image answer exit"
ENROL_VERIFY='set -u -o pipefail
home=$1; shift; faces=$1; shift
rm -rf "$home"
printf "%s\n" "$PIN" | "$@" fallback set --secret-stdin >/dev/null || { echo "fallback set failed"; exit 1; }
printf "%s\n" "$PIN" | "$@" enroll --user obama --image "$faces/obama.jpg" --image "$faces/obama2.jpg" --consent --secret-stdin \
  | sed "s/^/  enroll: /" || { echo "enroll failed"; exit 1; }
for img in obama3.jpg obama4.jpg biden2.jpg astronaut.png; do
  answer=$("$@" verify --image "$faces/$img"); echo "verify $img $answer exit $?"
done
rm -rf "$home"'

step "arm64: enrol/verify with the shared test photos"
T0=$(date +%s)
in_root /usr/bin/env PIN="$PIN" FR_PBD_HOME=/tmp/frpbd-home /bin/bash -c "$ENROL_VERIFY" _ /tmp/frpbd-home \
  /opt/fr-pbd/data/faces fr-pbd | tee "$WORK/arm64-answers.txt"
T_ARM_EV=$(( $(date +%s) - T0 ))

step "x86_64: the same enrol/verify from the same commit"
X86_HOME="$(mktemp -d)/home"
env PIN="$PIN" FR_PBD_HOME="$X86_HOME" PYTHONPATH="$WORK/x86-src/src" FR_PBD_MODELS="$MODELS" \
  bash -c "$ENROL_VERIFY" _ "$X86_HOME" "$DATA/faces" "$X86_PY" -m fr_pbd.cli | tee "$WORK/x86-answers.txt"
rmdir "$(dirname "$X86_HOME")" 2>/dev/null || true

step "templates of 20 LFW images: arm64, then x86_64"
T0=$(date +%s)
in_root python /opt/fr-pbd/src/hardware/aarch64_templates.py extract --lfw /opt/fr-pbd/data/lfw \
  --out /opt/fr-pbd/arm64-templates.json
T_ARM_TPL=$(( $(date +%s) - T0 ))
x86 "$WORK/x86-src/hardware/aarch64_templates.py" extract --lfw "$DATA/lfw" --out "$WORK/x86-templates.json"

step "compare: x86_64 (a) against arm64 (b)"
set +e
x86 "$WORK/x86-src/hardware/aarch64_templates.py" compare "$WORK/x86-templates.json" \
  "$ROOT/opt/fr-pbd/arm64-templates.json" --out "$WORK/compare.json"
CMP_RC=$?
set -e
ANSWERS_SAME=no
diff <(grep ^verify "$WORK/x86-answers.txt") <(grep ^verify "$WORK/arm64-answers.txt") && ANSWERS_SAME=yes
EXPECTED="verify obama3.jpg yes exit 0
verify obama4.jpg yes exit 0
verify biden2.jpg no exit 1
verify astronaut.png no exit 1"
ANSWERS_EXPECTED=no
[ "$(grep ^verify "$WORK/arm64-answers.txt")" = "$EXPECTED" ] && ANSWERS_EXPECTED=yes
T_END=$(date +%s)
echo "enrol/verify answers: arm64 = x86_64: $ANSWERS_SAME; as expected (obama yes, biden/astronaut no): $ANSWERS_EXPECTED"
echo "templates: compare exit $CMP_RC (0: every cosine >= 0.9999 and every pair the same yes/no)"
echo "wall (EMULATED, not board timings): total $(( T_END - T_START )) s; root $(( T_ROOT - T_START )) s;" \
     "install $(( T_INSTALL - T_ROOT )) s; arm64 enrol+4 verifies $T_ARM_EV s; arm64 20 LFW templates $T_ARM_TPL s"
OK=0
[ "$CMP_RC" = 0 ] && [ "$ANSWERS_SAME" = yes ] && [ "$ANSWERS_EXPECTED" = yes ] && [ "$DOCTOR_RC" = 0 ] || OK=1
echo "RESULT: $([ $OK = 0 ] && echo PASS || echo FAIL)"

if [ "$RECORD" = 1 ]; then
  DATE=$(date -u +%F)
  OUT="$REPO/hardware/results/aarch64-emulated-$DATE"
  x86 - "$WORK/compare.json" "$OUT.json" "$COMMIT" "$(( T_END - T_START ))" "$(( T_ROOT - T_START ))" \
    "$(( T_INSTALL - T_ROOT ))" "$T_ARM_EV" "$T_ARM_TPL" "$ANSWERS_SAME" "$ANSWERS_EXPECTED" "$DOCTOR_RC" "$OK" \
    "$(dpkg-query -W -f='${Version}' qemu-user-static)" "$(cat "$ROOT/etc/debian_version")" "$WORK/doctor.txt" \
    "$WORK/arm64-answers.txt" "$WORK/x86-answers.txt" <<'EOF'
import json, sys
(cmp_file, out_file, commit, total, root, install, arm_ev, arm_tpl, same, expected, doctor_rc, ok, qemu, debian,
 doctor_txt, arm_answers, x86_answers) = sys.argv[1:18]
lines = lambda path: [ln for ln in open(path).read().splitlines() if "cpuinfo" not in ln]  # noqa: E731
doc = {
    "schema": "fr-pbd/aarch64-emulated/1",
    "made_by": "hardware/aarch64-emulated.sh (issue 16, item 3); templates: hardware/aarch64_templates.py compare",
    "commit": commit, "pass": ok == "0",
    "emulation": {"qemu_user_static": qemu, "debian_arm64_root": debian, "binfmt_misc": "qemu-aarch64, flags PF",
                  "seccomp_filter": "not available under qemu-user (see doctor_arm64)",
                  "sys_mounted": False},
    "doctor_exit": int(doctor_rc), "doctor_arm64": lines(doctor_txt),
    "enrol_verify": {"arm64_same_as_x86_64": same == "yes", "as_expected": expected == "yes",
                     "enrolled": "obama.jpg + obama2.jpg (../shared/data/faces)",
                     "arm64": lines(arm_answers), "x86_64": lines(x86_answers),
                     "expected": {"obama3.jpg": "yes", "obama4.jpg": "yes", "biden2.jpg": "no", "astronaut.png": "no"}},
    "templates": json.load(open(cmp_file)),
    "wall_s_emulated_not_board_timings": {"total": int(total), "root": int(root), "install": int(install),
                                          "arm64_enrol_and_4_verifies": int(arm_ev),
                                          "arm64_20_lfw_templates": int(arm_tpl)},
}
open(out_file, "w").write(json.dumps(doc, indent=2) + "\n")
EOF
  grep -v cpuinfo "$LOG" > "$OUT.log" || true   # less onnxruntime's cpuinfo warnings (no /sys: see README)
  echo "recorded: $OUT.json and $OUT.log"
fi
exit $OK
