"""The PostgreSQL store's pure parts: placeholders, rows, what a commit announces, URLs in messages."""

from __future__ import annotations

import orjson
import pytest

from service.store.base import OutboxPolicy, redact_url
from service.store.postgres import NOTIFY_IDS, PgRow, _announcements, translate
from service.store.tx import Dialect, Tx


def test_placeholders_become_psycopgs_and_a_literal_percent_is_doubled() -> None:
    assert translate("SELECT * FROM jobs WHERE id = ? AND provider = ?") == (
        "SELECT * FROM jobs WHERE id = %s AND provider = %s"
    )
    assert translate("SELECT '100%' WHERE x = ?") == "SELECT '100%%' WHERE x = %s"


def test_a_row_answers_by_position_and_by_name_and_converts_to_a_dict() -> None:
    row = PgRow(("job_1", "queued"), {"id": 0, "status": 1})
    assert (row[0], row["status"], len(row), list(row)) == ("job_1", "queued", 2, ["job_1", "queued"])
    assert dict(row) == {"id": "job_1", "status": "queued"}  # type: ignore[call-overload]
    with pytest.raises(KeyError):
        row["nope"]


def tx(changed: set[str], *, outbox: bool = False, health: dict[str, bool] | None = None) -> Tx:
    t = Tx(None, 0.0, dialect=Dialect("test", integrity_errors=()), mirror_images=False, policy=OutboxPolicy())  # type: ignore[arg-type]
    t.changed = changed
    t.outbox_changed = outbox
    t.health = health or {}
    return t


def test_a_commit_that_changed_nothing_announces_nothing() -> None:
    assert _announcements("r1", tx(set())) == []


def test_what_a_commit_changed_is_announced_in_payloads_that_fit_notify() -> None:
    ids = {f"job_{n:026d}" for n in range(NOTIFY_IDS * 2 + 5)}
    payloads = _announcements("r1", tx(ids, outbox=True, health={"aivideoapi": True}))
    assert len(payloads) == 3
    assert all(len(p.encode()) < 8000 for p in payloads)  # PostgreSQL's limit for a NOTIFY payload
    messages = [orjson.loads(p) for p in payloads]
    assert {m["from"] for m in messages} == {"r1"}
    assert set().union(*(m["jobs"] for m in messages)) == ids
    assert messages[0]["outbox"] is True and messages[0]["health"] == {"aivideoapi": True}
    assert "outbox" not in messages[1]


def test_a_health_change_alone_is_announced() -> None:
    [payload] = _announcements("r1", tx(set(), health={"apiframe": False}))
    assert orjson.loads(payload) == {"from": "r1", "jobs": [], "outbox": False, "health": {"apiframe": False}}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://jobhook:s3cret@db:5432/jobhook", "postgresql://jobhook:***@db:5432/jobhook"),
        ("postgresql://db/jobhook", "postgresql://db/jobhook"),
        ("postgresql://jobhook@db/jobhook", "postgresql://jobhook@db/jobhook"),
        ("postgresql://jobhook:a@b@db/jobhook", "postgresql://jobhook:***@db/jobhook"),
        ("postgresql://jobhook:a@b@db/x@y", "postgresql://jobhook:***@db/x@y"),
    ],
)
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
