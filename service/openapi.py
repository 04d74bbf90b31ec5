"""The OpenAPI 3.1 description of every public route, served at `GET /openapi.json` (no token needed).

Built once, as data, from the code it describes: each status a route can answer, each refusal's
codes, and the shapes that `Job.to_json` and the other handlers really return. The tests walk the
app's routes to prove that none is left out, and fuzz every operation against this document, so
that a change to a route that is not made here too fails the suite.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import __version__, ids
from service.api import (
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_LIMIT,
    MAX_API_BODY,
    MAX_ATTEMPT_SEQ,
    MAX_EVENTS_LIMIT,
    MAX_IDEMPOTENCY_KEY,
    MAX_LIMIT,
    MAX_TASK_ID,
    MAX_WAIT,
)
from service.domain import routing
from service.domain.callbacks import MAX_BODY_BYTES
from service.domain.history import NOISE_EVENTS_PER_JOB
from service.domain.request import MAX_CANDIDATES, MAX_OBJECT_BYTES, RENDERING_SPEEDS
from service.domain.status import Status
from service.operators import MAX_DELIVERY_ID

Schema = dict[str, Any]

JSON = "application/json"
PATH = "/openapi.json"
# The ids the store hands out; anything else is refused with 404 before the database is asked.
JOB_ID_PATTERN = f"^{ids.JOB_ID.pattern}$"
# Wherever the routes say "at most 1 to N characters, not blank".
NOT_BLANK = r"\S"
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), **more: Any) -> Schema:
    """A closed object: every property required unless named in `optional`, nothing else allowed."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
        **more,
    }


def _json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    answer: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _code(*codes: str) -> Schema:
    return {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}}


def _refusal(description: str, *codes: str, headers: dict[str, Any] | None = None) -> Schema:
    """An `Error` answer whose `error.code` is one of `codes`."""
    return _json(description, {"allOf": [_ref("Error"), _code(*codes)]}, headers)


def _shared(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _header(description: str, schema: Schema | None = None, *, required: bool = True) -> Schema:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def _query(name: str, schema: Schema, description: str = "") -> Schema:
    """An optional query parameter. An empty value counts as not given, as in SPEC's `?status=&limit=`."""
    if schema.get("type") != "string":
        schema = {"anyOf": [schema, {"const": ""}]}
    described = f"{description}; empty: as if not given" if description else "empty: as if not given"
    return {"name": name, "in": "query", "required": False, "description": described, "schema": schema}


def _html(description: str, headers: dict[str, Any] | None = None) -> Schema:
    answer: Schema = {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}
    if headers:
        answer["headers"] = headers
    return answer


def _redirect(description: str, **headers: Schema) -> Schema:
    return {"description": description, "headers": {"Location": _header("where to go"), **headers}}


IMAGE_CONTENT = {kind: {"schema": {"type": "string", "contentEncoding": "binary"}} for kind in
                 ("image/png", "image/jpeg", "image/webp", "image/gif")}  # fmt: skip

API_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"sessionCookie": []}]
PUBLIC: list[dict[str, list[str]]] = []

# Answers that every protected route can give, and every route that touches the database.
AUTH = {"401": _shared("Unauthorized")}
UNSAFE_AUTH = {**AUTH, "403": _shared("CsrfRequired")}
STORAGE = {"503": _shared("StorageUnavailable")}


def _json_body(
    description: str, schema: Schema, *, max_bytes: int, codes_400: tuple[str, ...] = ()
) -> tuple[Schema, dict[str, Schema]]:
    """A JSON request body, and the answers that reading one can give (SPEC §3)."""
    body = {"required": True, "description": description, "content": {JSON: {"schema": schema}}}
    answers = {
        "400": _refusal("The body is empty or is not valid JSON.", "invalid_json", *codes_400),
        "413": _refusal(f"The body is over {max_bytes} bytes.", "payload_too_large"),
    }
    return body, answers


JOB_ID_PARAM: Schema = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "A job id (`job_` and a ULID); anything else is a job that does not exist (404).",
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
}

JOB_NOT_FOUND = {"404": _refusal("No job has this id.", "job_not_found")}

GENERATION_FIELDS: dict[str, Schema] = {
    "prompt": {"type": "string", "pattern": NOT_BLANK, "description": "What to draw; the provider caps its length."},
    "aspect_ratio": {"type": "string", "examples": ["1:1", "3:4", "9:16", "4:3", "16:9"]},
    "rendering_speed": {"type": "string", "examples": list(RENDERING_SPEEDS)},
    "output_format": {"type": "string", "examples": ["png", "jpeg"]},
    "seed": {"type": "integer"},
    "negative_prompt": {"type": "string"},
    "style_type": {"type": "string", "examples": ["AUTO", "GENERAL", "REALISTIC", "DESIGN"]},
    "magic_prompt": {"type": "boolean"},
    "num_images": {"type": "integer"},
    "reference_image_url": {"type": "string", "pattern": "^https?://"},
    "provider_options": {
        "type": "object",
        "description": f"Passed to the provider as is; at most {MAX_OBJECT_BYTES} bytes of JSON. A key that "
        "jobhook sets itself (a field of this vocabulary, the model, a callback or webhook URL, or the "
        "provider's name for one of them) is refused with 422 `reserved_option`. For the `simulator`, "
        "`simulate` scripts the task (`fail`, `drop_callback`, `stale_timestamp`, `duplicates`, "
        "`concurrent_duplicates`, `latency` in seconds, `refuse`: one of aivideoapi's error codes, such as "
        "`insufficient_credits`); a wrong one is a 422 `invalid_field` naming it.",
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "description": "Every refusal (SPEC §3): a status, a code and a message; some name the field at fault.",
        **_object(
            {
                "error": _object(
                    {
                        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                        "message": {"type": "string", "pattern": NOT_BLANK},
                        "field": {"type": "string", "description": "the request field at fault"},
                        "accepted": {"type": "array", "description": "what the provider accepts for `field`"},
                        "provider_code": {"type": "string", "description": "the provider's own code (502)"},
                        "job_id": {"type": "string", "pattern": JOB_ID_PATTERN},
                        "scope": {
                            "type": "string",
                            "description": "`budget_exceeded`: the cap that refused, `total` or a provider (SPEC §9)",
                        },
                        "reset_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "`budget_exceeded`: when that cap resets (the next UTC midnight)",
                        },
                        "candidates": {
                            "type": "array",
                            "description": "`no_provider`, `budget_exceeded`: each candidate provider left out, and why",
                            "items": _object(
                                {
                                    "provider": {"type": "string"},
                                    "reason": {"enum": [str(reason) for reason in routing.Reason]},
                                    "message": {"type": "string", "pattern": NOT_BLANK},
                                    "field": {"type": "string", "description": "`unsupported`: the field at fault"},
                                },
                                optional=("field",),
                            ),
                        },
                    },
                    optional=("field", "accepted", "provider_code", "job_id", "scope", "reset_at", "candidates"),
                )
            }
        ),
    },
    "JobError": _object(
        {"code": {"type": "string"}, "message": {"type": "string"}, "provider_code": {"type": "string"}},
        optional=("provider_code",),
    ),
    "Image": _object(
        {
            "url": {"type": "string", "description": "the provider's URL, or jobhook's when only jobhook has it"},
            "mirror_url": {"type": "string", "description": "jobhook's copy of an image the provider also serves"},
            "content_type": _nullable({"type": "string"}),
        },
        optional=("mirror_url", "content_type"),
    ),
    "GenerationRequest": {
        "description": "The generation as it was asked for: only the fields that were set.",
        **_object(GENERATION_FIELDS, optional=tuple(GENERATION_FIELDS)),
    },
    "Job": {
        "description": "jobhook's record of one generation (SPEC §2); times are RFC 3339 UTC.",
        **_object(
            {
                "id": {"type": "string", "pattern": JOB_ID_PATTERN},
                "provider": {"type": "string"},
                "provider_task_id": _nullable({"type": "string"}),
                "status": {"type": "string", "enum": [str(status) for status in Status]},
                "request": _ref("GenerationRequest"),
                "metadata": _nullable({"type": "object"}),
                "result": _nullable(_object({"images": {"type": "array", "minItems": 1, "items": _ref("Image")}})),
                "error": _nullable(_ref("JobError")),
                "resolved_by": {"enum": ["callback", "poll", "submit", None]},
                "callback_url_registered": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"},
                "submitted_at": _nullable({"type": "string", "format": "date-time"}),
                "updated_at": {"type": "string", "format": "date-time"},
                "finished_at": _nullable({"type": "string", "format": "date-time"}),
                "cost_usd": _nullable({"type": "number", "minimum": 0}),
                "attempts": {
                    "type": "array",
                    "items": _ref("Attempt"),
                    "description": "One per provider tried, oldest first (SPEC §8); `provider` and "
                    "`provider_task_id` above are the attempt the job follows: the last one, or the one that "
                    "completed it (an earlier attempt a reroute left may complete it late), or an earlier one "
                    "still alive that it follows again when the later ones could not take it.",
                },
                "callback_url": {
                    "type": "string",
                    "description": 'Only on a job the backend submits itself (`"submit": false`): give it to the provider.',
                },
            },
            optional=("callback_url",),
        ),
    },
    "Attempt": {
        "description": "One provider tried for a job. `state`: `not_sent` (never reached the provider: no "
        "connection, or its circuit open, `error.code` `circuit_open` saying until when; also while a "
        "429/5xx is retried there, `ended_at` null), `rejected` (a definite refusal, or 429/5xx past the "
        "retries: `error.code` `retries_exhausted`), `accepted`, `uncertain` (sent, outcome unknown), "
        "`completed`, `failed`; null while the call is in flight. The job moves to its next candidate "
        "only from `not_sent`, `rejected` or `failed`, never from `accepted`, `uncertain` or a timed-out job, "
        "unless the backend asks (`POST /v1/jobs/{id}/reroute`): the attempt left then stays `accepted` or "
        "`uncertain`, and its late result and cost still count.",
        **_object(
            {
                "seq": {"type": "integer", "minimum": 1, "description": "1 for the first attempt, and so on"},
                "provider": {"type": "string"},
                "provider_task_id": _nullable({"type": "string"}),
                "state": {
                    "enum": ["not_sent", "rejected", "accepted", "uncertain", "completed", "failed", None],
                },
                "error": _nullable(_ref("JobError")),
                "cost_usd": _nullable({"type": "number", "minimum": 0}),
                "started_at": {"type": "string", "format": "date-time"},
                "ended_at": _nullable({"type": "string", "format": "date-time"}),
            }
        ),
    },
    "Submission": {
        "description": "`POST /v1/jobs`: one vocabulary for every provider; only `provider` and `prompt` are required.",
        **_object(
            {
                "provider": {
                    "description": "One provider; `auto` (every configured provider in JOBHOOK_ROUTE_ORDER's "
                    "order: by default cheapest for this request first, unknown prices last; `latency`: fastest "
                    "measured p50 first; or a fixed list; the simulator only when no other is configured); or "
                    "the candidates in order of preference. With several, an attempt that refused the job, "
                    "was never sent or whose task failed moves the job to the next candidate (SPEC §8); each "
                    "candidate that cannot take it is left out, and 422 `no_provider` says why when none remains "
                    "(429 `budget_exceeded` when a daily cap left one out: SPEC §9).",
                    "oneOf": [
                        {
                            "type": "string",
                            "pattern": NOT_BLANK,
                            "examples": ["aivideoapi", "apiframe", "segmind", "apiinone", "simulator", "auto"],
                        },
                        {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1},
                            "minItems": 1,
                            "maxItems": MAX_CANDIDATES,
                            "uniqueItems": True,
                            "examples": [["apiframe", "aivideoapi"]],
                        },
                    ],
                },
                "max_price_usd": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "examples": [0.10],
                    "description": "The most this request may cost, in US dollars for all its images (SPEC §8): "
                    "a provider whose price for it is higher, or unknown (segmind without JOBHOOK_SEGMIND_PRICES), "
                    "is left out; when none remains the answer is 422 `no_provider`, and nothing is sent.",
                },
                **GENERATION_FIELDS,
                "metadata": {
                    "type": "object",
                    "description": f"Kept on the job; at most {MAX_OBJECT_BYTES} bytes of JSON.",
                },
                "submit": {"type": "boolean", "default": True, "description": "false: the backend submits it itself."},
            },
            optional=(
                *(name for name in GENERATION_FIELDS if name != "prompt"),
                "max_price_usd",
                "metadata",
                "submit",
            ),
        ),
    },
    "Event": _object(
        {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "type": {
                "type": "string",
                "examples": [
                    "submit",
                    "callback",
                    "poll",
                    "notification",
                    "mirror",
                    "circuit",
                    "failover",
                    "fallback",
                    "conflict",
                ],
            },
            "outcome": _nullable({"type": "string"}),
            "detail": {"type": "object"},
        }
    ),
    "Provider": _object(
        {
            "provider": {"type": "string"},
            "configured": {"type": "boolean"},
            "api_key": {"type": "string", "description": "`set`, `built in`, or which variable to set; never the key"},
            "base_url": {"type": "string"},
            "tracking": {"type": "string"},
            "prices_usd": {
                "type": "object",
                "description": "USD per image by tier (`rendering_speed`); empty: none published, costs unknown",
                "additionalProperties": {"type": "number", "minimum": 0},
            },
            "prices_overridden": {"type": "boolean", "description": "set by JOBHOOK_<P>_PRICES"},
            "default_tier": {"enum": list(RENDERING_SPEEDS), "description": "priced when none is asked"},
            "callbacks": {"enum": ["ok", "degraded"]},
            "polled_in_a_row": {"type": "integer", "minimum": 0},
            "credits": _nullable({"type": "number"}),
            "credits_low": {"type": "boolean"},
            "today": _object({"jobs": {"type": "integer", "minimum": 0}, "cost_usd": {"type": "number"}}),
            "circuit": {
                "description": "The provider's circuit (SPEC §8): `open` while jobhook sends it nothing (its jobs "
                "wait queued) until `until`; then `half_open`: one job (`probing`) tries it, and its success "
                "closes the circuit. `reason`: the last failure (`http_401`, `insufficient_credits`, `not_sent`, …).",
                **_object(
                    {
                        "state": {"enum": ["closed", "open", "half_open"]},
                        "until": _nullable({"type": "string", "format": "date-time"}),
                        "failures_in_a_row": {"type": "integer", "minimum": 0},
                        "reason": _nullable({"type": "string"}),
                        "probing": {"type": "boolean"},
                    }
                ),
            },
            "latency_p50_s": _nullable(
                {
                    "type": "number",
                    "minimum": 0,
                    "description": "Median seconds from submission to final of the completed jobs among the "
                    "provider's last 100 finished ones (SPEC §8); null until one completed.",
                }
            ),
            "latency_p90_s": _nullable({"type": "number", "minimum": 0, "description": "The same, 90th percentile."}),
            "success_rate": _nullable(
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "Completed / finished (completed or failed) over the same jobs; null until one "
                    "finished.",
                }
            ),
            "jobs_measured": {
                "type": "integer",
                "minimum": 0,
                "maximum": 100,
                "description": "Finished jobs measured.",
            },
        }
    ),
    "BudgetScope": {
        "description": "One scope's cap and figures today (UTC), in US dollars: `reserved` is sent with its "
        "outcome not known yet, `spent` is kept (the provider took it, or may have); a scope's cap refuses "
        "an attempt whose price would take reserved and spent past it.",
        **_object(
            {
                "scope": {"type": "string", "description": "`total` (every provider together) or a provider"},
                "cap_usd": _nullable({"type": "number", "minimum": 0, "description": "null: no cap"}),
                "reserved_usd": {"type": "number"},
                "spent_usd": {"type": "number"},
                "remaining_usd": _nullable({"type": "number", "minimum": 0, "description": "null: no cap"}),
                "exhausted_at": _nullable(
                    {
                        "type": "string",
                        "format": "date-time",
                        "description": "when the cap first refused something today (`budget.exhausted`)",
                    }
                ),
                "priced": {"type": "boolean", "description": "providers: has a price at all"},
                "note": {"type": "string", "description": "providers: why it cannot be sent under its caps"},
            },
            optional=("priced", "note"),
        ),
    },
    "Budget": {
        "description": "Today's caps and figures (SPEC §9): `JOBHOOK_BUDGET_USD_PER_DAY` (the total) and "
        "`JOBHOOK_<P>_BUDGET_USD_PER_DAY` (each provider's own); UTC days.",
        **_object(
            {
                "day": {"type": "string", "format": "date", "description": "the UTC day"},
                "reset_at": {"type": "string", "format": "date-time", "description": "the next UTC midnight"},
                "retry_after": {"type": "integer", "minimum": 1, "description": "seconds to the reset"},
                "total": _ref("BudgetScope"),
                "providers": {"type": "array", "items": _ref("BudgetScope")},
            }
        ),
    },
    "Delivery": {
        "description": "One notification to one destination; times are Unix seconds.",
        **_object(
            {
                "id": {"type": "integer"},
                "notification_id": {"type": "string"},
                "destination": {"type": "string"},
                "status": {"enum": ["pending", "delivered", "dead"]},
                "attempts": {"type": "integer", "minimum": 0},
                "next_attempt_at": _nullable({"type": "number"}),
                "last_status": _nullable({"type": "integer"}),
                "last_error": _nullable({"type": "string"}),
                "created_at": {"type": "number"},
                "delivered_at": _nullable({"type": "number"}),
                "type": {"type": "string"},
                "job_id": _nullable({"type": "string"}),
                "provider": _nullable({"type": "string"}),
            }
        ),
    },
    "SimulatorError": {
        "description": "The simulator answers in aivideoapi's error shape (PROVIDERS.md §1).",
        **_object(
            {
                "error": _object(
                    {
                        "code": {"type": "string"},
                        "message": {"type": "string", "pattern": NOT_BLANK},
                        "type": {"type": "string"},
                    }
                )
            }
        ),
    },
}

RESPONSES: dict[str, Schema] = {
    "Unauthorized": _refusal(
        "JOBHOOK_API_TOKENS is set and no valid bearer token (or dashboard session) came with the request.",
        "unauthorized",
        headers={"WWW-Authenticate": _header("`Bearer`")},
    ),
    "CsrfRequired": _refusal(
        "A write with the dashboard's session cookie needs the `X-Jobhook-CSRF` header.", "csrf_required"
    ),
    "StorageUnavailable": _refusal(
        "The database cannot be read or written right now; retry later.",
        "storage_unavailable",
        headers={"Retry-After": _header("seconds", {"type": "string", "pattern": "^[0-9]+$"})},
    ),
}


def _simulator_refusal(description: str, *codes: str) -> Schema:
    return _json(description, {"allOf": [_ref("SimulatorError"), _code(*codes)]})


def _simulator_not_found(description: str, code: str) -> Schema:
    """A path that matches no route answers `not_found`: the simulator's own, or jobhook's when the path
    does not even reach the mount (e.g. a line break in it)."""
    simulator = {"allOf": [_ref("SimulatorError"), _code(code, "not_found")]}
    return _json(f"{description} Or no route has this path.", {"anyOf": [simulator, _not_found_route()]})


def _not_found_route() -> Schema:
    return {"allOf": [_ref("Error"), _code("not_found")]}


def _operation(summary: str, responses: dict[str, Schema], *, tag: str, security: Any = None, **more: Any) -> Schema:
    operation: Schema = {"summary": summary, "tags": [tag], "responses": responses, **more}
    operation["security"] = API_SECURITY if security is None else security
    return operation


REROUTE_BODY, REROUTE_READ = _json_body(
    "Optional: the attempt to leave.",
    _object(
        {
            "from_attempt": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPT_SEQ,
                "description": "the `seq` of the attempt to leave; when it is no longer the current one, nothing "
                "changes (200)",
            }
        },
        optional=("from_attempt",),
    ),
    max_bytes=MAX_API_BODY,
)
REROUTE_BODY["required"] = False
SUBMISSION_BODY, SUBMISSION_READ = _json_body(
    "The generation to submit (or, with `submit: false`, to track).",
    _ref("Submission"),
    max_bytes=MAX_API_BODY,
    codes_400=("invalid_idempotency_key",),
)
PATCH_BODY, PATCH_READ = _json_body(
    "The provider's task id for a job the backend submitted itself.",
    _object(
        {
            "provider_task_id": {
                "type": "string",
                "maxLength": MAX_TASK_ID,
                "allOf": [{"pattern": NOT_BLANK}, {"pattern": NO_CONTROL_CHARACTERS}],
            }
        }
    ),
    max_bytes=MAX_API_BODY,
)
DELIVERY_ID = {"type": "integer", "minimum": 1, "maximum": MAX_DELIVERY_ID}
RESEND_BODY, RESEND_READ = _json_body(
    'Which deliveries to send again: `{"ids": […]}` or `{"dead": true}` (every dead one).',
    {
        "oneOf": [
            _object(
                {
                    "ids": {"type": "array", "minItems": 1, "maxItems": 1000, "items": DELIVERY_ID},
                    "dead": {"const": False},
                },
                optional=("dead",),
            ),
            _object({"dead": {"const": True}}),
        ]
    },
    max_bytes=MAX_API_BODY,
)

PATHS: dict[str, Schema] = {
    "/": {
        "get": _operation(
            "The map of the service; a browser (Accept: text/html) is sent to the dashboard.",
            {
                "200": _json(
                    "The service's name, version and links.",
                    _object(
                        {
                            "service": {"const": "jobhook"},
                            "version": {"type": "string"},
                            "links": {"type": "object", "additionalProperties": {"type": "string"}},
                        }
                    ),
                ),
                "303": _redirect("To /dashboard, for a browser."),
            },
            tag="service",
            security=PUBLIC,
        )
    },
    PATH: {
        "get": _operation(
            "This document.",
            {"200": _json("The OpenAPI 3.1 description of every route.", {"type": "object", "required": ["openapi"]})},
            tag="service",
            security=PUBLIC,
        )
    },
    "/healthz": {
        "get": _operation(
            "Liveness: the process answers.",
            {"200": _json("Alive.", _object({"status": {"const": "ok"}}))},
            tag="service",
            security=PUBLIC,
        )
    },
    "/readyz": {
        "get": _operation(
            "Readiness: the database takes a write and the background loops are alive.",
            {
                "200": _json("Ready.", _ref("Readiness")),
                "503": _json("Not ready; `checks` says what fails.", _ref("Readiness")),
            },
            tag="service",
            security=PUBLIC,
        )
    },
    "/metrics": {
        "get": _operation(
            "Prometheus metrics (text exposition format).",
            {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **STORAGE,
            },
            tag="service",
            security=PUBLIC,
        )
    },
    "/v1/jobs": {
        "post": _operation(
            "Submit a generation, or track one the backend submits itself (SPEC §3).",
            {
                "202": _json(
                    "The job. A replay of an Idempotency-Key answers the first request's job.",
                    _ref("Job"),
                    {"Idempotent-Replayed": _header("`true` on a replay", {"const": "true"}, required=False)},
                ),
                **SUBMISSION_READ,
                **UNSAFE_AUTH,
                "422": _refusal(
                    "The submission cannot be sent as it is: `field` names what is wrong, `accepted` what the "
                    "provider takes; `no_provider` lists in `candidates` each provider left out and why (over "
                    "`max_price_usd`, or its price unknown under it or under a daily budget). Nothing was sent, and "
                    "no job was made.",
                    "invalid_body",
                    "unknown_field",
                    "missing_field",
                    "invalid_field",
                    "unknown_provider",
                    "provider_not_configured",
                    "unsupported_field",
                    "reserved_option",
                    "unsupported_value",
                    "idempotency_key_reused",
                    "no_provider",
                ),
                "429": _refusal(
                    "No candidate can take the submission within today's budget (SPEC §9): `scope` names the cap "
                    "(`total` or a provider), `reset_at` when it resets (the next UTC midnight), `candidates` each "
                    "provider left out and why. Nothing was sent, and no job was made.",
                    "budget_exceeded",
                    headers={"Retry-After": _header("seconds to the reset", {"type": "string", "pattern": "^[0-9]+$"})},
                ),
                "502": _refusal(
                    "The provider refused the submission (`provider_code` is its own code); the job is failed.",
                    "provider_rejected",
                ),
                **STORAGE,
            },
            tag="jobs",
            parameters=[
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "The same key returns the same job and submits once.",
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_IDEMPOTENCY_KEY,
                        "pattern": NOT_BLANK,
                    },
                }
            ],
            requestBody=SUBMISSION_BODY,
        ),
        "get": _operation(
            "Jobs, newest first, a page at a time.",
            {
                "200": _json(
                    "A page of jobs; `next_cursor` fetches the next one.",
                    _object(
                        {"jobs": {"type": "array", "items": _ref("Job")}, "next_cursor": _nullable({"type": "string"})}
                    ),
                ),
                "400": _refusal(
                    "A filter or the page is not one this API understands.",
                    "invalid_status",
                    "invalid_provider",
                    "invalid_limit",
                    "invalid_cursor",
                ),
                **AUTH,
                **STORAGE,
            },
            tag="jobs",
            parameters=[
                _query("status", {"enum": [str(status) for status in Status]}),
                _query("provider", {"type": "string"}, "a provider jobhook knows"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, f"default {DEFAULT_LIMIT}"),
                _query("cursor", {"type": "string"}, "a `next_cursor`"),
            ],
        ),
    },
    "/v1/jobs/{job_id}": {
        "parameters": [JOB_ID_PARAM],
        "get": _operation(
            "The job; `wait` holds the answer until it is final or that many seconds pass.",
            {
                "200": _json("The job.", _ref("Job")),
                "400": _refusal(f"`wait` is not a number of seconds from 0 to {MAX_WAIT:g}.", "invalid_wait"),
                **AUTH,
                **JOB_NOT_FOUND,
                "503": _refusal(
                    "The database cannot be read or written right now, or JOBHOOK_MAX_WAITERS requests already"
                    " wait (with `wait`); retry later.",
                    "storage_unavailable",
                    "too_many_waiters",
                    headers={"Retry-After": _header("seconds", {"type": "string", "pattern": "^[0-9]+$"})},
                ),
            },
            tag="jobs",
            parameters=[_query("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT}, "seconds; default 0")],
        ),
        "patch": _operation(
            "Bind the provider's task id to a job the backend submitted itself.",
            {
                "200": _json("The job, bound.", _ref("Job")),
                **PATCH_READ,
                **UNSAFE_AUTH,
                **JOB_NOT_FOUND,
                "409": _refusal(
                    "jobhook submitted this job itself, or it (or another job) already has another task id.",
                    "not_backend_submitted",
                    "task_id_conflict",
                ),
                "422": _refusal(
                    'The body is not `{"provider_task_id": "…"}`.',
                    "invalid_body",
                    "unknown_field",
                    "missing_field",
                    "invalid_field",
                ),
                **STORAGE,
            },
            tag="jobs",
            requestBody=PATCH_BODY,
        ),
    },
    "/v1/jobs/{job_id}/events": {
        "parameters": [JOB_ID_PARAM],
        "get": _operation(
            "The job's history, oldest first, a page at a time: submission, each callback delivery, each poll,"
            f" each notification. Past the first {NOISE_EVENTS_PER_JOB} refused or duplicate deliveries, the"
            " rest are counted on one `callback` event of outcome `summary`, updated in place.",
            {
                "200": _json(
                    "A page of events, oldest first; `next_cursor` fetches the next one.",
                    _object(
                        {
                            "job_id": {"type": "string"},
                            "events": {"type": "array", "items": _ref("Event")},
                            "next_cursor": _nullable({"type": "string"}),
                        }
                    ),
                ),
                "400": _refusal("The page is not one this API understands.", "invalid_limit", "invalid_cursor"),
                **AUTH,
                **JOB_NOT_FOUND,
                **STORAGE,
            },
            tag="jobs",
            parameters=[
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_LIMIT},
                    f"default {DEFAULT_EVENTS_LIMIT}",
                ),
                _query("cursor", {"type": "string"}, "a `next_cursor`"),
            ],
        ),
    },
    "/v1/jobs/{job_id}/refresh": {
        "parameters": [JOB_ID_PARAM],
        "post": _operation(
            "Poll the provider about this job now.",
            {
                "200": _json("The job after the poll.", _ref("Job")),
                **UNSAFE_AUTH,
                **JOB_NOT_FOUND,
                "409": _refusal("The job has no task id at a provider that can be polled.", "not_pollable"),
                **STORAGE,
            },
            tag="jobs",
        ),
    },
    "/v1/jobs/{job_id}/reroute": {
        "parameters": [JOB_ID_PARAM],
        "post": _operation(
            "Try the job's next candidate provider now (SPEC §8), even though its current attempt was accepted, is"
            " uncertain, or the job timed out: the attempt left is not cancelled and may still deliver and charge,"
            " so both may charge (the job's `failover` event of reason `reroute` says so). The first attempt to"
            " complete completes the job; every attempt's cost is kept and `cost_usd` is their sum. The next"
            " candidate is sent at once; a job that moves gets a new JOBHOOK_JOB_TIMEOUT. `from_attempt` names"
            " the attempt to leave (its `seq`; by default the current one when the request is read): a reroute"
            " whose attempt was left already changes nothing, so a retried request moves the job once.",
            {
                "202": _json("The job, moved to its next candidate (and sent there, unless it waits).", _ref("Job")),
                "200": _json("The job unchanged: the attempt named had been left already.", _ref("Job")),
                **REROUTE_READ,
                **UNSAFE_AUTH,
                **JOB_NOT_FOUND,
                "409": _refusal(
                    "Nothing to reroute: the backend submitted the job itself, the job is completed or failed, no"
                    " candidate provider is left, or the current submission has not answered yet.",
                    "backend_submitted",
                    "job_final",
                    "no_candidate",
                    "submission_in_flight",
                ),
                "422": _refusal(
                    'The body is not `{"from_attempt": N}` naming one of the job\'s attempts.',
                    "invalid_body",
                    "unknown_field",
                    "invalid_field",
                ),
                "502": _refusal(
                    "Every candidate left refused the job for good and no earlier attempt may still deliver: the"
                    " job is failed (as `POST /v1/jobs` answers).",
                    "provider_rejected",
                ),
                **STORAGE,
            },
            tag="jobs",
            requestBody=REROUTE_BODY,
        ),
    },
    "/v1/jobs/{job_id}/images/{index}": {
        "parameters": [
            JOB_ID_PARAM,
            {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
        ],
        "get": _operation(
            "Image bytes that jobhook holds (a synchronous provider's, or a mirrored copy).",
            {
                "200": {"description": "The image.", "content": IMAGE_CONTENT},
                **AUTH,
                "404": _refusal(
                    "No such job, no such image, or jobhook holds no copy of it (see the job's result URL).",
                    "job_not_found",
                    "image_not_found",
                    "image_not_held",
                ),
                **STORAGE,
            },
            tag="jobs",
        ),
    },
    "/media/{token}": {
        "get": _operation(
            "An image jobhook holds, by a signed link (public: for Slack and email).",
            {
                "200": {"description": "The image.", "content": IMAGE_CONTENT},
                "404": _refusal("The link is not one jobhook made, or the image is gone.", "not_found"),
                **STORAGE,
            },
            tag="jobs",
            security=PUBLIC,
            parameters=[{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
        )
    },
    "/callbacks/{token}": {
        "post": _operation(
            "A provider's callback (SPEC §4). Public: the signed token in the URL is the credential.",
            {
                "200": _json(
                    "Recorded before this answer: applied once (`accepted`), or seen before (`duplicate`).",
                    _object({"status": {"enum": ["accepted", "duplicate"]}}),
                ),
                "400": _refusal(
                    "The delivery is not genuine or not readable: the code says which check failed.",
                    "invalid_json",
                    "missing_task_id",
                    "task_id_mismatch",
                    "stale_timestamp",
                    "event_mismatch",
                    "invalid_payload",
                    "unsupported",
                ),
                "404": _refusal(
                    "The token is not one jobhook signed (nothing about any job is revealed).", "not_found"
                ),
                "409": _refusal("The callback names another task than the job's.", "task_id_conflict"),
                "413": _refusal(f"The body is over {MAX_BODY_BYTES} bytes.", "payload_too_large"),
                **STORAGE,
            },
            tag="callbacks",
            security=PUBLIC,
            parameters=[
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "X-Task-Id", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "X-Timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "X-Event", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            requestBody={
                "required": True,
                "description": "The provider's task object, as the provider sends it.",
                "content": {JSON: {"schema": {"type": "object"}}},
            },
        )
    },
    "/v1/providers": {
        "get": _operation(
            "The providers: configured or not, how they are tracked, their health and today's use.",
            {
                "200": _json("The providers.", _object({"providers": {"type": "array", "items": _ref("Provider")}})),
                **AUTH,
                **STORAGE,
            },
            tag="operators",
        )
    },
    "/v1/budget": {
        "get": _operation(
            "Today's budget: each cap, what is reserved and spent (UTC day), what is left, and the reset.",
            {"200": _json("The budget.", _ref("Budget")), **AUTH, **STORAGE},
            tag="operators",
        )
    },
    "/v1/outbox": {
        "get": _operation(
            "Notification deliveries, newest first, with counts per destination.",
            {
                "200": _json(
                    "The deliveries.",
                    _object(
                        {
                            "deliveries": {"type": "array", "items": _ref("Delivery")},
                            "counts": {
                                "type": "object",
                                "additionalProperties": _object(
                                    {"pending": {"type": "integer"}, "dead": {"type": "integer"}}
                                ),
                            },
                            "destinations": {
                                "type": "object",
                                "additionalProperties": _object(
                                    {"breaker": {"enum": ["closed", "open"]}, "stopped": _nullable({"type": "string"})}
                                ),
                            },
                        }
                    ),
                ),
                "400": _refusal(
                    "`status` or `limit` is not one this API understands.", "invalid_status", "invalid_limit"
                ),
                **AUTH,
                **STORAGE,
            },
            tag="operators",
            parameters=[
                _query("status", {"enum": ["pending", "delivered", "dead"]}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "default 50"),
            ],
        )
    },
    "/v1/outbox/resend": {
        "post": _operation(
            "Deliver again from the start of the retry schedule.",
            {
                "200": _json(
                    "The ids of the deliveries that will be sent again.",
                    _object({"resent": {"type": "array", "items": {"type": "integer"}}}),
                ),
                **RESEND_READ,
                **UNSAFE_AUTH,
                "422": _refusal('The body is not `{"ids": […]}` or `{"dead": true}`.', "invalid_body", "invalid_field"),
                **STORAGE,
            },
            tag="operators",
            requestBody=RESEND_BODY,
        )
    },
    "/v1/stream": {
        "get": _operation(
            "Server-sent events: a `job` event with the job's JSON at each committed change, `resync` when the "
            "reader fell behind, a comment every 15 s. The answer never ends by itself.",
            {
                "200": {
                    "description": "The event stream.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **AUTH,
                "503": _refusal(
                    "JOBHOOK_MAX_STREAMS streams are open already; retry later.",
                    "too_many_streams",
                    headers={"Retry-After": _header("seconds", {"type": "string", "pattern": "^[0-9]+$"})},
                ),
            },
            tag="operators",
        )
    },
    "/dashboard/login": {
        "get": _operation(
            "The dashboard's sign-in page.",
            {"200": _html("The page.")},
            tag="dashboard",
            security=PUBLIC,
            parameters=[
                {"name": "next", "in": "query", "schema": {"type": "string"}, "description": "a /dashboard path"}
            ],
        ),
        "post": _operation(
            "Sign in with an API token: a session cookie stands in for it from then on.",
            {
                "303": _redirect("Signed in: to `next`.", **{"Set-Cookie": _header("the session")}),
                "400": _refusal("The body cannot be read as a form or a JSON object.", "invalid_body"),
                "401": _html("The token is not valid: the page again, with the error."),
                "413": _refusal("The body is over 8 KiB.", "payload_too_large"),
                "415": _refusal(
                    "Not a form (application/x-www-form-urlencoded) nor JSON: refused unread.",
                    "unsupported_media_type",
                ),
            },
            tag="dashboard",
            security=PUBLIC,
            parameters=[{"name": "next", "in": "query", "schema": {"type": "string"}}],
            requestBody={
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": _object({"token": {"type": "string"}}),
                    },
                    JSON: {"schema": _object({"token": {"type": "string"}})},
                },
            },
        ),
    },
    "/dashboard/logout": {
        "post": _operation(
            "Sign out: the session ends (its cookie opens nothing from then on) and the cookie is cleared.",
            {"303": _redirect("To the sign-in page."), **UNSAFE_AUTH},
            tag="dashboard",
        )
    },
    "/dashboard/static/{path}": {
        "get": _operation(
            "The dashboard's script, style and page (public, cached by their digest).",
            {
                "200": {
                    "description": "The file.",
                    "content": {
                        kind: {"schema": {"type": "string"}} for kind in ("text/javascript", "text/css", "text/html")
                    },
                },
                "404": _refusal("No such file.", "not_found"),
            },
            tag="dashboard",
            security=PUBLIC,
            parameters=[{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
        )
    },
}

# The dashboard's pages are one HTML shell; without a session, a browser is sent to sign in.
for _page, _params in (
    ("/dashboard", []),
    ("/dashboard/jobs/{job_id}", [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]),
    ("/dashboard/providers", []),
    ("/dashboard/outbox", []),
):
    PATHS[_page] = {
        "get": _operation(
            "The dashboard (one HTML shell; its script reads /v1 with the session cookie).",
            {"200": _html("The page."), "303": _redirect("No session: to the sign-in page."), **AUTH},
            tag="dashboard",
            parameters=_params,
        )
    }

SIMULATOR_KEY: list[dict[str, list[str]]] = [{"simulatorKey": []}]
SIMULATOR_PATHS: dict[str, Schema] = {
    "/simulator/v1/images/generations": {
        "post": _operation(
            "The built-in simulator (SPEC §7): create a task, as aivideoapi does.",
            {
                "200": _json(
                    "The task was created.",
                    _object(
                        {
                            "code": {"const": 200},
                            "msg": {"const": "success"},
                            "data": _object({"taskId": {"type": "string"}}),
                        }
                    ),
                ),
                "400": _simulator_refusal(
                    "The request is not one aivideoapi would take (or `input.simulate.refuse` says so).",
                    "invalid_request",
                ),
                "401": _simulator_refusal("No `sk-` key (or told to refuse it).", "invalid_api_key"),
                "402": _simulator_refusal("Told to refuse: out of credits.", "insufficient_credits"),
                "403": _simulator_refusal("Told to refuse: the caller's IP is not allowed.", "ip_not_allowed"),
                "404": _simulator_not_found("Unknown model (or told to say so).", "model_not_found"),
                "429": _simulator_refusal(
                    "Told to refuse: rate or spend limit.", "rate_limit_exceeded", "spend_limit_exceeded"
                ),
                "500": _simulator_refusal("Told to refuse: a server error.", "internal_error"),
                "503": _simulator_refusal("Told to refuse: the upstream model failed.", "upstream_error"),
            },
            tag="simulator",
            security=SIMULATOR_KEY,
            requestBody={"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
        )
    },
    "/simulator/v1/tasks/{task_id}": {
        "get": _operation(
            "The simulator's task object (aivideoapi's shape).",
            {
                "200": _json("The task.", {"type": "object", "required": ["id", "status"]}),
                "401": _simulator_refusal("No `sk-` key.", "invalid_api_key"),
                "404": _simulator_not_found("No such task.", "task_not_found"),
            },
            tag="simulator",
            security=SIMULATOR_KEY,
            parameters=[{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        )
    },
    "/simulator/files/{task_id}.{ext}": {
        "get": _operation(
            "A simulated image (no key, like a CDN link).",
            {
                "200": {
                    "description": "The image.",
                    "content": {kind: IMAGE_CONTENT[kind] for kind in ("image/png", "image/jpeg")},
                },
                "404": _simulator_not_found("No such file.", "file_not_found"),
            },
            tag="simulator",
            security=PUBLIC,
            parameters=[
                {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "ext", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
        )
    },
}

SCHEMAS["Readiness"] = _object(
    {
        "status": {"enum": ["ready", "not_ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    }
)

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "jobhook",
        "version": __version__,
        "description": (
            "Callbacks, polling and durable job state for asynchronous image generation. With "
            "JOBHOOK_API_TOKENS set, `/v1/*` and the dashboard need `Authorization: Bearer <token>` (or the "
            "dashboard's session cookie, with `X-Jobhook-CSRF` on writes); unset, they are open. Every refusal "
            'is `{"error": {"code": "…", "message": "…"}}`. The `/simulator` routes exist only while the '
            "built-in simulator is on (JOBHOOK_SIMULATOR)."
        ),
    },
    "tags": [{"name": name} for name in ("jobs", "callbacks", "operators", "service", "dashboard", "simulator")],
    "paths": {**PATHS, **SIMULATOR_PATHS},
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "one of JOBHOOK_API_TOKENS"},
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "jobhook_session"},
            "simulatorKey": {"type": "http", "scheme": "bearer", "description": "any key that starts with `sk-`"},
        },
    },
}

_BODY = orjson.dumps(DOCUMENT)


async def openapi_json(request: Request) -> Response:
    return Response(_BODY, media_type=JSON)


routes = [Route(PATH, openapi_json, methods=["GET"])]
