"""The locks (requirements/*.lock) are what gets installed: exact versions, each with its hashes.

pyproject.toml keeps ranges for whoever installs jobhook as a package; `make demo`, `make test`, CI and
the container install the locks. These checks keep the two agreeing, so that a range changed in
pyproject.toml without `make lock` fails here rather than installing something nobody tested.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SERVICE_LOCK = ROOT / "requirements" / "service.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"


def read_lock(path: Path) -> dict[str, tuple[Version, Marker | None, int]]:
    """name → (pinned version, environment marker, number of hashes), from a `uv pip compile` output."""
    pins: dict[str, tuple[Version, Marker | None, int]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # one logical line per package
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *hashes = (part.strip() for part in line.split("--hash="))
        requirement = Requirement(spec)
        (pin,) = requirement.specifier
        assert pin.operator == "==", f"{path.name}: {spec} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = (Version(pin.version), requirement.marker, len(hashes))
    return pins


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if extra is None:
        return [Requirement(line) for line in project["dependencies"]]
    return [Requirement(line) for line in project["optional-dependencies"][extra]]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [(SERVICE_LOCK, declared()), (DEV_LOCK, declared() + declared("dev"))],
    ids=["service", "dev"],
)
def test_every_declared_dependency_is_pinned_within_its_range_with_hashes(
    lock: Path, requirements: list[Requirement]
) -> None:
    pins = read_lock(lock)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is in pyproject.toml but not in {lock.name}: run `make lock`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, outside pyproject's {requirement}: run `make lock`"
        )
    unhashed = [name for name, (_, _, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"{lock.name}: no hash for {unhashed}"


def test_the_service_lock_is_the_dev_lock_without_the_test_toolchain() -> None:
    service, dev = read_lock(SERVICE_LOCK), read_lock(DEV_LOCK)
    differ = {
        name: (pin[0], dev.get(name, (None,))[0])
        for name, pin in service.items()
        if dev.get(name, (None,))[0] != pin[0]
    }
    assert not differ, f"service.lock and dev.lock pin different versions: {differ}"
    dev_only = {canonicalize_name(r.name) for r in declared("dev")}
    assert not dev_only & set(service), f"test tools in service.lock: {dev_only & set(service)}"


def test_the_suite_runs_with_the_versions_the_dev_lock_pins() -> None:
    """What was tested is what is locked: `make test` installed exactly these (the stamp depends on the lock)."""
    wrong = {}
    for name, (version, marker, _) in read_lock(DEV_LOCK).items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (str(version), "missing")
            continue
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, (
        f"installed versions differ from requirements/dev.lock (locked, installed): {wrong}; make .venv/.installed"
    )
