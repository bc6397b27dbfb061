"""The package as users get it: a wheel that installs in a clean venv, an sdist whose tests run."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

import domain_event_broker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel and an sdist built with ``python -m build`` (no isolation: offline, fast)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "deprecated" not in result.stdout + result.stderr.lower()
    return out


def test_the_wheel_installs_in_a_clean_venv_and_tells_its_version(
    dist: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    (wheel,) = dist.glob("*.whl")
    version = domain_event_broker.__version__
    assert wheel.name == f"domain_event_broker-{version}-py3-none-any.whl"
    venv = tmp_path / "venv"
    # No pip of its own (ensurepip takes ~15 s here): our pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--quiet", str(wheel)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shown = subprocess.run(
        [str(venv / "bin" / "domain-events"), "--version"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"domain-events {version}"  # what scripts read
    assert any(line.startswith("pika ") for line in lines)
    assert "aio-pika: not installed" in lines  # the clean venv has no extras
    assert any(line.startswith("RabbitMQ ") for line in lines)
    assert "guest:guest" not in shown.stdout
    # The relay needs an extra; without it, it says which.
    relay = subprocess.run(
        [str(venv / "bin" / "domain-events-relay"), "--version"], capture_output=True, text=True
    )
    assert "pip install 'domain-event-broker[sqlalchemy]'" in relay.stderr
    assert time.monotonic() - started < 60


def test_the_wheel_carries_the_license_and_current_metadata(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "domain_event_broker/py.typed" in names
    assert not any(name.startswith("tests/") for name in names)
    assert "License-Expression: MIT" in metadata
    assert f"Version: {domain_event_broker.__version__}" in metadata
    assert "Classifier: Typing :: Typed" in metadata


def test_the_sdist_holds_what_its_tests_need(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    for needed in (
        "LICENSE",
        "CHANGELOG.md",
        "tests/conftest.py",
        "tests/support.py",
        "tests/pg_database.py",
        "tests/unit/conftest.py",
        "tests/django_tests/conftest.py",
        "tests/faults/rabbit_cluster.py",
        "tests/tls/rabbit_tls.py",
        "examples/django_project/manage.py",
    ):
        assert (unpacked / needed).exists(), needed
    # Every test module imports (collection fails on a missing helper module).
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert " error" not in collected.stdout.splitlines()[-1]
