"""Model resolution: verified bytes only, tampered copies refused, no implicit download."""

from __future__ import annotations

import hashlib
import io
import shutil

import pytest

from fr_pbd import models
from fr_pbd.errors import ManifestError, ModelError, ModelHashMismatchError, ModelNotFoundError
from fr_pbd.models import fetch as fetch_mod

YUNET = "face_detection_yunet_2023mar.onnx"


@pytest.fixture()
def isolated(monkeypatch, tmp_path):
    """An empty FR_PBD_MODELS and an empty cache."""
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("FR_PBD_MODELS", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return env


def test_manifest_lists_every_known_model_with_provenance():
    m = models.manifest()
    assert set(m) >= {"yunet-2023mar", "dlib-resnet-v1", "sface-2021dec", "minifasnet-v2", "minifasnet-v1se"}
    for spec in m.values():
        assert spec.licence and spec.provenance and spec.training_data and spec.input
        assert len(spec.sha256) == 64
    assert m["dlib-resnet-v1"].obtain == "build"
    assert m["yunet-2023mar"].url.startswith("https://")


def test_shared_models_resolve_verified(models_env):
    for name in ("yunet-2023mar", "minifasnet-v2", "minifasnet-v1se"):
        vm = models.resolve(name)
        assert hashlib.sha256(vm.data).hexdigest() == vm.spec.sha256
        assert models.status(name).verified


def test_missing_model_names_file_and_fix(isolated):
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve("yunet-2023mar")
    msg = str(info.value)
    assert YUNET in msg and "fr-pbd models fetch yunet-2023mar" in msg


def test_tampered_copy_is_refused_with_both_hashes(isolated, models_env):
    data = bytearray((models_env / YUNET).read_bytes())
    data[len(data) // 2] ^= 0x01
    (isolated / YUNET).write_bytes(bytes(data))
    with pytest.raises(ModelHashMismatchError) as info:
        models.resolve("yunet-2023mar")
    msg = str(info.value)
    assert str(isolated / YUNET) in msg
    assert models.spec("yunet-2023mar").sha256 in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    assert "fr-pbd models fetch yunet-2023mar" in msg
    assert not models.status("yunet-2023mar").verified


def test_first_directory_decides_a_bad_copy_is_not_skipped(isolated, models_env, tmp_path):
    cache = models.cache_dir()
    cache.mkdir(parents=True)
    shutil.copy(models_env / YUNET, cache / YUNET)
    (isolated / YUNET).write_bytes(b"junk")
    with pytest.raises(ModelHashMismatchError):
        models.resolve("yunet-2023mar")
    (isolated / YUNET).unlink()
    assert models.resolve("yunet-2023mar").path == cache / YUNET


def test_unknown_model():
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        models.spec("nope")


def test_manifest_validation():
    with pytest.raises(ManifestError, match="schema"):
        models.parse_manifest("schema = 2\n[models.a]\n")
    with pytest.raises(ManifestError, match="sha256"):
        models.parse_manifest(
            'schema = 1\n[models.a]\nrole="detector"\nfile="a"\nsha256="x"\nsize=1\nlicence="MIT"\n'
            'obtain="build"\nprovenance="p"\ntraining_data="t"\ninput="i"\n'
        )
    with pytest.raises(ManifestError, match="not valid TOML"):
        models.parse_manifest("schema = = 1")


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_fetch_verifies_and_installs_atomically(isolated, models_env, tmp_path):
    good = (models_env / YUNET).read_bytes()
    calls = []

    def opener(url, timeout):
        calls.append(url)
        return FakeResponse(good)

    dest = tmp_path / "dl"
    path = fetch_mod.fetch("yunet-2023mar", dest, progress=None, opener=opener)
    assert path.read_bytes() == good
    assert calls == [models.spec("yunet-2023mar").url]
    assert [p.name for p in dest.iterdir()] == [YUNET]


def test_fetch_with_wrong_bytes_installs_nothing(isolated, tmp_path):
    dest = tmp_path / "dl"
    size = models.spec("yunet-2023mar").size
    with pytest.raises(ModelHashMismatchError, match="nothing was installed"):
        fetch_mod.fetch("yunet-2023mar", dest, progress=None, opener=lambda u, timeout: FakeResponse(b"x" * size))
    with pytest.raises(ModelHashMismatchError, match="larger"):
        fetch_mod.fetch("yunet-2023mar", dest, progress=None,
                        opener=lambda u, timeout: FakeResponse(b"x" * (size + 1)))
    assert list(dest.iterdir()) == []


def test_built_models_are_not_fetched(isolated, tmp_path):
    with pytest.raises(ModelError, match="fr-pbd models build dlib-resnet"):
        fetch_mod.fetch("dlib-resnet-v1", tmp_path, progress=None, opener=None)
