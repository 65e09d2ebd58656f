#!/usr/bin/env bash
# What fr-pbd is for, in a few seconds: set the fallback PIN, enrol with consent, verify
# (same person: yes; another person: no; a printed photo of an enrolled person: no), audit
# the result, then crypto-shred everything. All in a temporary home that is removed at the
# end, also on failure. It is also a smoke test: every step's exit status is checked and any
# wrong answer makes the demo fail (exit 1, one line "demo FAILED: ..." on stderr).
#
# Called by tools/setup-and-run.sh; alone once set up:  bash tools/demo.sh
# Honours FR_PBD_MODELS (default ../shared/models), FR_PBD_DATA (default ../shared/data),
# both relative to this checkout when unset, and FR_PBD (the fr-pbd executable; default
# .venv/bin/fr-pbd, else fr-pbd on PATH).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fail() { echo "demo FAILED: $*" >&2; exit 1; }

MODELS=${FR_PBD_MODELS:-$ROOT/../shared/models}
DATA=${FR_PBD_DATA:-$ROOT/../shared/data}
FR=${FR_PBD:-}
if [ -z "$FR" ]; then
    if [ -x "$ROOT/.venv/bin/fr-pbd" ]; then FR=$ROOT/.venv/bin/fr-pbd; else FR=$(command -v fr-pbd || true); fi
fi
[[ -z "$FR" || "$FR" == */* ]] || FR=$(command -v "$FR" || true)
[ -n "$FR" ] && [ -x "$FR" ] || fail "no fr-pbd executable (run: bash tools/setup-and-run.sh, or set FR_PBD)"
[ -d "$MODELS" ] || fail "no models directory $MODELS (set FR_PBD_MODELS)"
export FR_PBD_MODELS=$(cd "$MODELS" && pwd)
F=$DATA/faces
S=$DATA/spoof
for img in "$F/obama.jpg" "$F/obama2.jpg" "$F/obama3.jpg" "$F/biden2.jpg" "$S/live_T1.jpg" "$S/spoof_print_F1.jpg"; do
    [ -f "$img" ] || fail "test photo $img is missing (set FR_PBD_DATA)"
done

H=$(mktemp -d "${TMPDIR:-/tmp}/fr-pbd-demo.XXXXXX")
trap 'rm -rf "$H"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
unset FR_PBD_HOME   # every command below names --home "$H"

# run EXPECTED_RC STEP COMMAND...: show the command (paths shortened), run it, and fail unless
# its exit status is EXPECTED_RC. Its stdout is echoed and kept in $OUT; stderr passes through.
OUT=
STEP=
run() {
    local want=$1 rc=0
    STEP=$2
    shift 2
    local shown="$*"
    shown=${shown//"$FR"/fr-pbd}; shown=${shown//"$F/"/faces/}; shown=${shown//"$S/"/spoof/}; shown=${shown//"$H"/\$HOME_DEMO}
    echo "\$ ${STDIN:+echo \$PIN | }$shown"
    OUT=$("$@" <<<"${STDIN:-}") || rc=$?
    [ -z "$OUT" ] || printf '%s\n' "$OUT" | sed 's/^/  /'
    [ "$rc" -eq "$want" ] || fail "$STEP: '$shown' exited $rc, expected $want"
}
# answer WORD: fail unless the last command printed exactly WORD
answer() { [ "$OUT" = "$1" ] || fail "$STEP: expected the answer '$1', got '${OUT//$'\n'/ }'"; }

echo "fr-pbd demo in a temporary home ($H), erased at the end."
echo "The photos are test data (../shared/data/SOURCES.md): real people who never consented to"
echo "being enrolled. They are enrolled here only to show the pipeline, and erased afterwards."
echo

echo "1. The PIN alternative comes first (condition 2: face verification is never the only way in)."
PIN=246813   # at least 6 digits
echo "\$ echo $PIN | fr-pbd fallback set --home \$HOME_DEMO --secret-stdin"
OUT=$(echo "$PIN" | "$FR" fallback set --home "$H" --secret-stdin) || fail "fallback PIN: 'fr-pbd fallback set --secret-stdin' exited $?"
printf '  %s\n' "$OUT"

echo "2. Enrol, with the PIN as proof and consent recorded: Obama from three photos (enrolment asks for 3 captures);"
echo "   the person in the presentation-attack"
echo "   samples from one live photo (spoof/live_T1.jpg)."
STDIN=$PIN run 0 enrolment "$FR" enroll --home "$H" --user obama --image "$F/obama.jpg" --image "$F/obama2.jpg" --image "$F/obama4.jpg" --consent --secret-stdin
[[ $OUT =~ ([0-9]+)\ template ]] && N_OBAMA=${BASH_REMATCH[1]} || fail "enrolment: no template count in its output"
[ "$N_OBAMA" -eq 3 ] || fail "enrolment: obama has $N_OBAMA templates, expected 3"
STDIN=$PIN run 0 enrolment "$FR" enroll --home "$H" --user sample --image "$S/live_T1.jpg" --consent --secret-stdin
[[ $OUT =~ ([0-9]+)\ template ]] && N_SAMPLE=${BASH_REMATCH[1]} || fail "enrolment: no template count in its output"
run 0 status "$FR" status --home "$H"

echo "3. Verify: the only answer is yes or no (condition 5), exit 0 or 1."
run 0 "same person (must be yes)" "$FR" verify --home "$H" --user obama --image "$F/obama3.jpg"
answer yes
run 1 "another person (must be no)" "$FR" verify --home "$H" --image "$F/biden2.jpg"
answer no
echo "   The screen replay shows the enrolled 'sample' person (compare, which has no liveness check,"
echo "   says same), yet verify says no: the presentation-attack check refuses it."
run 0 "screen replay (control: it must show the enrolled person)" "$FR" compare "$S/live_T1.jpg" "$S/spoof_replay_F2.jpg"
answer same
run 1 "screen replay (must be no)" "$FR" verify --home "$H" --user sample --image "$S/spoof_replay_F2.jpg"
answer no

echo "4. Audit the home against the five conditions (no daemon here, so the daemon's checks are"
echo "   INCONCLUSIVE and the verdict is INCOMPLETE, never PASS; the report is erased with the home)."
AUDIT_RC=0
AUDIT_OUT=$("$FR" audit --home "$H" --out "$H/audit") || AUDIT_RC=$?
echo "\$ fr-pbd audit --home \$HOME_DEMO --out \$HOME_DEMO/audit"
[ -z "$AUDIT_OUT" ] || printf '%s\n' "$AUDIT_OUT" | sed 's/^/  /'
# 0 all pass, 1 a check failed, 3 incomplete: verdicts. Anything else (2: error) is an error.
case $AUDIT_RC in 0|1|3) ;; *) fail "audit: 'fr-pbd audit' exited $AUDIT_RC (an error, not a verdict)";; esac
VERDICT=$(printf '%s\n' "$AUDIT_OUT" | grep '^audit: ' | tail -n 1) || fail "audit: 'fr-pbd audit' printed no verdict line"
VERDICT=${VERDICT%%; report:*}

echo "5. Withdraw everything: crypto-shred the store and its key (then the temporary home is removed)."
run 0 erase "$FR" erase --home "$H" --yes

echo  # the six-line summary README describes (tests/test_demo.py checks it)
echo "enrolled: $N_OBAMA templates of obama + $N_SAMPLE of the sample person (consent recorded)"
echo "same person: yes"
echo "another person: no"
echo "screen replay: no (presentation attack)"
echo "$VERDICT (exit $AUDIT_RC)"
echo "(test data erased)"
# A FAIL verdict on a home this demo just made is a broken product; INCOMPLETE (no daemon) is not.
case ${VERDICT#audit: } in FAIL*) fail "audit: a check failed on the home this demo made (see above)";; esac
