"""SEC.presentation-attack: a screen replay of the enrolled person, shown to real matchers.

The product without presentation-attack detection is the honest product of ``shapes.py`` with
``--recognise``: fr-pbd's own embedder and threshold, liveness off, like the many face logins
that have none. The person is the subject of the three spoof samples (``live_T1.jpg`` bona
fide, ``spoof_replay_F2.jpg`` the same face on a tablet screen, ``spoof_print_F1.jpg`` a print).
Before this check nothing gave a verdict on an accepted attack; now the replay is a FAIL with
its IAPAR, and the same presentations to fr-pbd's daemon (liveness on) PASS.
"""

from __future__ import annotations

import shutil

from fr_pbd.audit import FAIL, INCONCLUSIVE, PASS, run_target
from tests.adversarial.test_shapes import pad_target
from tests.test_audit import need_strace



def test_the_attack_must_show_the_enrolled_person(data_dir):
    from fr_pbd.audit.pad import Attack, same_subject

    spoof, faces = data_dir / "spoof", data_dir / "faces"
    live = (spoof / "live_T1.jpg").read_bytes()
    checked = same_subject([Attack("replay", (spoof / "spoof_replay_F2.jpg").read_bytes(), live, "F2"),
                            Attack("someone else", (faces / "biden2.jpg").read_bytes(), live, "biden2")])
    assert checked["replay"] is None  # the same face on a tablet: a valid attack on this person
    assert "does not show the person" in checked["someone else"]


def test_a_matcher_without_pad_accepts_the_replay_and_fails(tmp_path, data_dir):
    need_strace()
    spoof = data_dir / "spoof"
    attacks = f'[{{ species = "replay", image = "{spoof / "spoof_replay_F2.jpg"}" }}, "{spoof / "spoof_print_F1.jpg"}"]'
    checks, _ = run_target(pad_target(tmp_path, spoof, data_dir / "faces", attacks, ["--recognise"]),
                           verifications=1, rounds=5)
    c = {x.id: x for x in checks}["SEC.presentation-attack"]
    text = c.summary + " | " + " | ".join(c.details)
    assert c.status == FAIL, text
    assert c.values["species"]["replay"]["accepted"] == c.values["species"]["replay"]["presented"] == 3
    # the print does not match the bona fide photo even without liveness: not presented, and said so
    assert "spoof_print_F1: the attack does not show the person" in text


def test_the_bytewise_control_refuses_everything_and_proves_nothing(tmp_path, data_dir):
    """Control: the same product without --recognise refuses the replay (different bytes) and also every bona
    fide photo but the enrolled file; a refusal then proves no detection, so the check is not a PASS."""
    need_strace()
    spoof = data_dir / "spoof"
    attacks = f'[{{ species = "replay", image = "{spoof / "spoof_replay_F2.jpg"}", genuine = "{data_dir / "faces" / "obama3.jpg"}" }}]'
    checks, _ = run_target(pad_target(tmp_path, spoof, data_dir / "faces", attacks, []), verifications=1, rounds=5)
    c = {x.id: x for x in checks}["SEC.presentation-attack"]
    assert c.status == INCONCLUSIVE, c.summary  # obama3 is not the replay's subject: nothing presented
    assert "does not show the person" in c.summary + " ".join(c.details)


def test_fr_pbds_daemon_refuses_the_replay(tmp_path, data_dir, extractor):
    need_strace()
    from fr_pbd.verify import Consent, Verifier
    from tests.test_daemon import PIN, write_config

    spoof = data_dir / "spoof"
    root = tmp_path / "frpbd"
    home = root / "home"
    root.mkdir()
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("subject", [spoof / "live_T1.jpg"], Consent("1", "test"), fallback=PIN)
    write_config(home, deadline_ms=400)
    (root / "frames").mkdir(parents=True)
    (root / "run").mkdir(mode=0o700)
    shutil.copyfile(spoof / "live_T1.jpg", root / "frames" / "current.jpg")
    t = root / "target.toml"
    t.write_text(f'''name = "fr-pbd daemon, presentation attacks"
root = "{root}"
[socket]
path = "run/d.sock"
[answer]
yes = "Y"
no = "N"
malformed = "fr-pbd"
[probe]
frames = "frames"
genuine = "{spoof / 'live_T1.jpg'}"
attacks = [{{ species = "replay", image = "{spoof / 'spoof_replay_F2.jpg'}" }}]
[data]
dirs = ["home"]
[process]
command = ["{{python}}", "-m", "fr_pbd.cli", "serve", "--home", "home", "--socket", "run/d.sock", "--frames", "frames"]
ready_timeout = 120
''')
    checks, _ = run_target(t, verifications=1, rounds=2)
    c = {x.id: x for x in checks}["SEC.presentation-attack"]
    assert c.status == PASS, c.summary + " | " + " | ".join(c.details)
    assert c.values["species"]["replay"] == {"presented": 3, "accepted": 0, "unanswered": 0,
                                             "bona_fide_accepted": 3, "iapar": 0.0}
