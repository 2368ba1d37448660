"""The twistd plugin is found after both installs the README relies on.

Each install goes into a fresh virtualenv with no system site-packages, from
a copy of the source tree, so the repository's own checkout on sys.path cannot
make the test pass by accident.  This is the flat-layout pitfall of
docs/README.md: a PEP 660 editable install hides twisted/plugins from
twistd, the compat mode does not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import os
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _source_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """Dependencies as wheels, fetched once (from the package registry or pip's cache)."""
    house = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(house),
         "twisted[tls]", "service-identity", "pyopenssl", "zope.interface", "prometheus_client", "setuptools", "wheel",
         "dkimpy", "pyspf", "authres", "authheaders", "dnspython", "img2pdf", "pillow", "pillow-heif"],
        check=True,
    )
    return house


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "editable-compat"])
def test_twistd_finds_plugin(tmp_path, wheelhouse, editable):
    source = _source_copy(tmp_path / "src")
    # conftest points PYTHONPATH at the checkout: a clean venv must not see it.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
           "--no-index", "--find-links", str(wheelhouse)]
    target = ["-e", str(source), "--config-settings", "editable_mode=compat"] if editable else [str(source)]
    subprocess.run(pip + target, check=True, cwd=tmp_path, env=clean)
    result = subprocess.run(
        [str(env_dir / "bin" / "twistd"), "phaserlink", "--help"], capture_output=True, text=True, cwd=tmp_path, env=clean
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import phaserlink; print(phaserlink.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True, env=clean,
    ).stdout
    assert str(source if editable else env_dir) in where
