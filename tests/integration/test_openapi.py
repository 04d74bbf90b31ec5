"""/openapi.json describes every route of the app, and nothing that is not one.

The fuzz (test_fuzz.py) holds the answers to the document; this holds the document to the routes, so
that a route added, removed or renamed without its description fails here first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import schemathesis
from starlette.routing import BaseRoute, Mount, Route

from service import __version__, openapi
from service.app import create_app
from service.config import Settings
from service.http import BearerAuth
from tests.conftest import ServiceFactory

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def app_operations(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(METHOD, path template) for every operation the Starlette routes answer; HEAD goes with GET."""
    for route in routes:
        if isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, path
        elif isinstance(route, Mount):
            if route.routes:
                yield from app_operations(route.routes, prefix + route.path)
            else:  # a mounted app of files (StaticFiles): anything below it, read-only
                yield "GET", f"{prefix}{route.path}/{{path}}"
        else:
            raise AssertionError(f"a kind of route this test does not know: {route!r}")


def documented_operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi.DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def full_app(tmp_path: Path) -> Any:
    """The app with every optional part on: the simulator is mounted only when it is enabled."""
    settings = Settings.from_environ(
        {
            "JOBHOOK_DATABASE": str(tmp_path / "jobhook.db"),
            "JOBHOOK_MEDIA_DIR": str(tmp_path / "media"),
            "JOBHOOK_API_TOKENS": "a-token",
            "JOBHOOK_SIMULATOR": "true",
        }
    )
    return create_app(settings, self_url="http://127.0.0.1:9")


def test_every_route_is_described_and_every_description_is_a_route(tmp_path: Path) -> None:
    served = set(app_operations(full_app(tmp_path).routes))
    described = {(method, path) for method, path, _ in documented_operations()}
    assert served - described == set(), "routes missing from service/openapi.py"
    assert described - served == set(), "service/openapi.py describes routes that do not exist"


def test_the_document_is_valid_openapi_3_1() -> None:
    assert openapi.DOCUMENT["openapi"] == "3.1.0"
    assert openapi.DOCUMENT["info"]["version"] == __version__
    schemathesis.openapi.from_dict(openapi.DOCUMENT).validate()


def test_security_follows_the_auth_middleware() -> None:
    """What BearerAuth guards says it needs a token and documents 401; what it leaves open says neither."""
    for method, path, operation in documented_operations():
        guarded = path.startswith(BearerAuth.PROTECTED) and not path.startswith(BearerAuth.OPEN)
        label = f"{method} {path}"
        if guarded:
            assert operation["security"] == openapi.API_SECURITY, label
            assert "401" in operation["responses"], label
            if method not in ("GET", "HEAD", "OPTIONS"):
                assert "403" in operation["responses"], f"{label}: cookie writes need the CSRF header"
        elif not path.startswith("/simulator/"):
            assert operation["security"] == [], label


def test_every_operation_documents_an_answer_that_is_not_a_refusal() -> None:
    for method, path, operation in documented_operations():
        assert any(code < "400" for code in operation["responses"]), f"{method} {path}"
        assert operation.get("summary"), f"{method} {path}"


async def test_the_document_is_served_without_a_token(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS="a-token") as svc:
        response = await svc.client.get("/openapi.json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == openapi.DOCUMENT
        assert (await svc.client.get("/")).json()["links"]["openapi"] == "/openapi.json"
