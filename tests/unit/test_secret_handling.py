"""Secrets are compared in constant time, and an unexpected error logs no token from its path."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import app as app_module
from service.sessions import Sessions
from service.store.sqlite import SQLiteStore

SERVICE = Path(__file__).resolve().parents[2] / "service"
SECRETISH = re.compile(r"secret|token|password|passwd|signature|api_key|apikey|credential|fingerprint|digest", re.I)


def _names(node: ast.AST) -> set[str]:
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            found.add(child.attr)
    return found


def secret_comparisons(source: str) -> list[str]:
    """Comparisons (==, !=, in, not in) with a secret-named operand that is not a None check."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
            continue  # `token is None`, `len(token) > 512`
        if any(isinstance(operand, ast.Constant) and operand.value is None for operand in operands):
            continue
        if any(SECRETISH.search(name) for operand in operands for name in _names(operand)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_audit_finds_what_it_looks_for() -> None:
    """Guard: the audit below would see a plain comparison of a secret."""
    assert secret_comparisons("ok = presented == self.token") == ["1: presented == self.token"]
    assert secret_comparisons("ok = value in fingerprints") == ["1: value in fingerprints"]
    assert secret_comparisons("ok = api_key != other") == ["1: api_key != other"]
    assert secret_comparisons("ok = token is None or secret is not None or len(token) > 512") == []
    assert secret_comparisons("ok = hmac.compare_digest(a.encode(), token.encode())") == []


@pytest.mark.parametrize("path", sorted(SERVICE.rglob("*.py")), ids=lambda path: str(path.relative_to(SERVICE)))
def test_no_secret_is_compared_with_an_operator(path: Path) -> None:
    """Tokens, keys and signatures are compared with hmac.compare_digest (or itsdangerous, which uses it):
    `==` stops at the first differing byte, and how long it took says how much of a guess was right."""
    assert secret_comparisons(path.read_text()) == []


def test_sessions_accept_each_token_and_refuse_near_misses(tmp_path: Path) -> None:
    """(The cookies themselves are rows in the database: tests/integration/test_dashboard_sessions.py.)"""
    sessions = Sessions(["key"], ["tok-a", "tok-b"], SQLiteStore(tmp_path / "unused.db"))
    assert sessions.token_matches("tok-a") and sessions.token_matches("tok-b")
    for near in ("tok-", "tok-a ", "tok-c", "TOK-A", "", "tok-atok-b", "tok-é"):
        assert not sessions.token_matches(near), near


async def _boom(request: Request) -> Response:
    raise RuntimeError("a bug")


async def test_an_unexpected_error_logs_the_route_not_the_token(caplog: pytest.LogCaptureFixture) -> None:
    token = "eyJqb2IiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZS1vZi10aGUtdG9rZW4"
    app = Starlette(
        routes=[Route("/callbacks/{token}", _boom, methods=["POST"]), Route("/media/{token}", _boom)],
        exception_handlers={Exception: app_module._server_error},
    )
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="jobhook"):
        async with httpx.AsyncClient(transport=transport, base_url="http://jobhook") as client:
            answers = [await client.post(f"/callbacks/{token}"), await client.get(f"/media/{token}")]
    assert [answer.status_code for answer in answers] == [500, 500]
    assert all(answer.json()["error"]["code"] == "internal_error" for answer in answers)
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "jobhook")
    assert "unexpected error on POST /callbacks/{token}" in logged
    assert "unexpected error on GET /media/{token}" in logged
    assert token not in logged
    assert all(token not in answer.text for answer in answers)
