"""Every setting jobhook reads is documented where a user looks: README.md or deploy/jobhook.env.example."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import PROVIDER_NAMES

ROOT = Path(__file__).resolve().parents[2]
# Read by the settings (service/config.py) and by the CLI's client commands (service/cli.py).
SOURCES = [ROOT / "service" / "config.py", ROOT / "service" / "cli.py"]


def names_read() -> set[str]:
    names: set[str] = set()
    for source in SOURCES:
        text = source.read_text()
        names |= set(re.findall(r"\bJOBHOOK_[A-Z][A-Z0-9_]*[A-Z0-9]\b", text))
        # Per-provider names are built: f"JOBHOOK_{provider.upper()}_API_KEY".
        for suffix in re.findall(r"JOBHOOK_\{provider\.upper\(\)\}(_[A-Z0-9_]+)", text):
            names |= {f"JOBHOOK_{provider.upper()}{suffix}" for provider in PROVIDER_NAMES}
        other_templates = re.findall(r"JOBHOOK_\{(?!provider\.upper\(\)\})[^}]*\}", text)
        assert not other_templates, f"{source.name} builds setting names this test cannot expand: {other_templates}"
    return names


def test_the_scan_finds_the_settings_it_should() -> None:
    """The scan itself: it must see plain names and the per-provider ones (else the test below proves nothing)."""
    names = names_read()
    assert {"JOBHOOK_DATABASE", "JOBHOOK_PUBLIC_URL", "JOBHOOK_SEGMIND_API_KEY", "JOBHOOK_URL"} <= names
    assert len(names) > 30


def test_every_setting_read_is_in_the_readme_or_the_env_example() -> None:
    documented = (ROOT / "README.md").read_text() + (ROOT / "deploy" / "jobhook.env.example").read_text()
    missing = sorted(name for name in names_read() if not re.search(rf"\b{name}\b", documented))
    assert not missing, f"settings read but documented in neither README.md nor deploy/jobhook.env.example: {missing}"
