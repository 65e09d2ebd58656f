"""The public surface: a handful of functions, none of which hands out a template or a score."""

from __future__ import annotations

import inspect

import numpy as np

import fr_pbd
from fr_pbd.template import Template
from tests.conftest import missing

FORBIDDEN = ("Template", "ndarray", "float", "bytes", "Capture")


def test_public_names_and_signatures_return_no_biometric_data():
    public = [n for n in fr_pbd.__all__ if n != "__version__"]
    assert set(public) == {"Comparison", "Consent", "Decision", "find_faces", "enroll", "verify_face", "unenroll",
                           "set_fallback", "check_fallback", "same_person"}
    for name in public:
        obj = getattr(fr_pbd, name)
        if inspect.isfunction(obj):
            ret = str(inspect.signature(obj).return_annotation)
            for word in FORBIDDEN:
                assert word not in ret, (name, ret)
    # accepted and why, for the user's own screen; no score, template or matched user
    assert [f for f in fr_pbd.Decision.__dataclass_fields__] == ["accepted", "reason", "retry_after", "detail"]
    # same_person's answer is a Decision too (one table of reasons), plus which photo had no usable face
    assert issubclass(fr_pbd.Comparison, fr_pbd.Decision)
    assert [f for f in fr_pbd.Comparison.__dataclass_fields__] == ["accepted", "reason", "retry_after", "detail",
                                                                    "image"]
    assert "Comparison" in str(inspect.signature(fr_pbd.same_person).return_annotation)
    # Enrolment needs the fallback credential as proof: a required keyword, no default to forget.
    proof = inspect.signature(fr_pbd.enroll).parameters["fallback"]
    assert proof.kind is inspect.Parameter.KEYWORD_ONLY and proof.default is inspect.Parameter.empty
    assert inspect.signature(fr_pbd.set_fallback).parameters["current"].kind is inspect.Parameter.KEYWORD_ONLY


def _walk(value):
    yield value
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk(v)


def test_calls_return_no_template_or_vector(tmp_path, faces_dir, models_env):
    try:
        from fr_pbd.pipeline import build_pipeline

        build_pipeline()
    except Exception as exc:  # noqa: BLE001
        missing(str(exc))
    home = tmp_path / "h"
    results = [
        fr_pbd.set_fallback("1234-5678", home=home),
        fr_pbd.enroll("obama", [faces_dir / "obama.jpg"], fr_pbd.Consent("1"), home=home, fallback="1234-5678"),
        fr_pbd.verify_face(faces_dir / "obama2.jpg", home=home),
        fr_pbd.same_person(faces_dir / "obama.jpg", faces_dir / "obama3.jpg"),
        fr_pbd.same_person(faces_dir / "obama.jpg", faces_dir / "biden2.jpg"),
        fr_pbd.check_fallback("1234-5678", home=home),
        fr_pbd.unenroll("obama", home=home),
    ]
    assert results[2].accepted is True and results[3].accepted is True and results[4].accepted is False
    assert bool(results[3]) is True and bool(results[4]) is False  # `if same_person(a, b):` reads as a sentence
    assert results[4].reason == "no_match"
    for r in results:
        for v in _walk(r):
            assert not isinstance(v, (Template, np.ndarray, float)), type(v)
    faces = fr_pbd.find_faces(faces_dir / "two_people.jpg")
    assert len(faces) == 2


def test_no_command_exports_templates():
    from fr_pbd import cli

    parser = cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    for word in ("export", "dump", "backup", "identify", "watch", "search"):
        assert word not in commands
