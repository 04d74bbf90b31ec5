"""Fixtures shared by the integration and acceptance tests: the real app on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from service.domain.job import Candidate
from service.http import server_protocol
from service.ids import new_job_id
from service.runtime import Runtime
from service.store.base import NewJob, OutboxPolicy
from service.store.common import Store
from service.store.engines import make_store
from tests.fakes.server import free_socket, serve_asgi
from tests.postgres import PostgresServer, missing_reason

FINISHED = ("completed", "failed", "timed_out")
# Every test that asks for `database` (the `jobhook` fixture does) runs on SQLite, and on PostgreSQL
# too unless it is named in SQLITE_IS_ENOUGH below; a test that reads or breaks the SQLite file itself
# is marked `sqlite_only`. JOBHOOK_TEST_ENGINES narrows the engines (`sqlite`, `postgresql`);
# JOBHOOK_TEST_POSTGRESQL=all runs every `database` test on PostgreSQL as well, SQLITE_IS_ENOUGH aside.
ENGINES = tuple(os.environ.get("JOBHOOK_TEST_ENGINES", "sqlite,postgresql").split(","))
POSTGRESQL_ALL = os.environ.get("JOBHOOK_TEST_POSTGRESQL") == "all"

# The tests whose PostgreSQL run adds nothing: measured by `python -m tests.pg_selection` (see there),
# which ran every test on PostgreSQL under coverage (lines and branches of the store: postgres.py,
# tx.py, common.py, outbox_queries.py, purge_queries.py, base.py, engines.py, and maintenance.py),
# kept the store's own tests, the concurrency and purge tests, then as few others as cover every line
# and branch the whole PostgreSQL half covered. Some branches are taken only when a race goes one way
# (a duplicate arriving after the job finished, a callback after a poll), so which tests cover them
# varies between runs: the list holds only the tests that two measurements both found redundant
# (102 of 139 test functions; 37 keep their PostgreSQL run, beside every acceptance test).
# A new test is not named here, so it runs on both engines; rerun the measurement when the store changes.
SQLITE_IS_ENOUGH: frozenset[str] = frozenset(
    {
        "tests/browser/test_dashboard.py::test_a_phone_never_scrolls_sideways",
        "tests/browser/test_dashboard.py::test_job_page_shows_the_timeline_and_images",
        "tests/browser/test_dashboard.py::test_jobs_appear_and_change_live_without_reload",
        "tests/browser/test_dashboard.py::test_sign_in_once_never_a_token_in_a_url_and_sign_out",
        "tests/browser/test_dashboard.py::test_status_and_provider_filters",
        "tests/integration/test_aivideoapi_flow.py::test_backend_submitted_job_bound_by_first_callback",
        "tests/integration/test_aivideoapi_flow.py::test_backend_submitted_job_bound_by_patch",
        "tests/integration/test_aivideoapi_flow.py::test_briefly_unable_provider_leaves_job_queued_then_retries",
        "tests/integration/test_aivideoapi_flow.py::test_concurrent_duplicates_apply_once",
        "tests/integration/test_aivideoapi_flow.py::test_dropped_callback_is_caught_by_polling_after_the_grace",
        "tests/integration/test_aivideoapi_flow.py::test_duplicates_change_the_job_once",
        "tests/integration/test_aivideoapi_flow.py::test_failed_task_fails_the_job",
        "tests/integration/test_aivideoapi_flow.py::test_forged_and_oversized_and_malformed_deliveries",
        "tests/integration/test_aivideoapi_flow.py::test_header_checks_refuse_with_their_codes",
        "tests/integration/test_aivideoapi_flow.py::test_idempotency_key_makes_one_job_and_one_provider_call",
        "tests/integration/test_aivideoapi_flow.py::test_job_completes_by_callback_and_wire_is_exact",
        "tests/integration/test_aivideoapi_flow.py::test_provider_refusal_answers_502_and_fails_the_job",
        "tests/integration/test_aivideoapi_flow.py::test_refresh_polls_now",
        "tests/integration/test_aivideoapi_flow.py::test_stale_and_future_timestamps_are_refused",
        "tests/integration/test_aivideoapi_flow.py::test_timed_out_job_still_completes_later",
        "tests/integration/test_aivideoapi_flow.py::test_wait_returns_the_moment_the_job_finishes",
        "tests/integration/test_aivideoapi_flow.py::test_without_public_url_jobs_are_polled_from_the_poll_interval",
        "tests/integration/test_api.py::test_bearer_tokens",
        "tests/integration/test_api.py::test_limits_themselves_are_accepted_and_a_reused_key_is_refused",
        "tests/integration/test_api.py::test_no_route_answers_5xx_to_hostile_input",
        "tests/integration/test_api.py::test_unconfigured_provider_is_refused_naming_the_variable",
        "tests/integration/test_apiframe_flow.py::test_a_bare_request_sends_only_prompt_model_and_webhook",
        "tests/integration/test_apiframe_flow.py::test_a_claim_the_poll_contradicts_is_not_applied",
        "tests/integration/test_apiframe_flow.py::test_a_failure_with_its_own_code_and_message",
        "tests/integration/test_apiframe_flow.py::test_both_failure_shapes_fail_the_job",
        "tests/integration/test_apiframe_flow.py::test_concurrent_duplicate_webhooks_apply_once",
        "tests/integration/test_apiframe_flow.py::test_dropped_webhook_is_caught_by_polling_after_the_grace",
        "tests/integration/test_apiframe_flow.py::test_each_tier_on_the_wire_and_its_cost",
        "tests/integration/test_apiframe_flow.py::test_every_result_shape_completes_the_job",
        "tests/integration/test_apiframe_flow.py::test_output_format_is_refused_and_nothing_is_sent",
        "tests/integration/test_apiframe_flow.py::test_provider_refusal_answers_502_and_fails_the_job",
        "tests/integration/test_apiframe_flow.py::test_rate_limited_submission_waits_out_retry_after_then_is_accepted",
        "tests/integration/test_apiframe_flow.py::test_the_genuine_webhook_after_a_refuted_claim_is_confirmed",
        "tests/integration/test_apiframe_flow.py::test_uncertain_submission_is_never_resent_and_the_webhook_binds_it",
        "tests/integration/test_apiframe_flow.py::test_webhook_is_accepted_and_applied_only_after_a_confirming_poll",
        "tests/integration/test_apiframe_flow.py::test_webhook_naming_another_job_is_refused_with_409",
        "tests/integration/test_apiframe_flow.py::test_without_public_url_no_webhook_is_registered_and_polling_finishes",
        "tests/integration/test_apiinone_flow.py::test_a_bare_request_sends_only_model_and_prompt",
        "tests/integration/test_apiinone_flow.py::test_all_nine_aspect_ratios_are_accepted",
        "tests/integration/test_apiinone_flow.py::test_an_unknown_aspect_ratio_is_refused_listing_the_nine",
        "tests/integration/test_apiinone_flow.py::test_backend_submitted_job_bound_by_patch_then_polled",
        "tests/integration/test_apiinone_flow.py::test_backend_submitted_job_is_offered_no_callback_url",
        "tests/integration/test_apiinone_flow.py::test_no_callback_is_registered_and_polling_starts_at_the_interval",
        "tests/integration/test_apiinone_flow.py::test_provider_refusal_answers_502",
        "tests/integration/test_apiinone_flow.py::test_rate_limited_poll_waits_out_retry_after",
        "tests/integration/test_apiinone_flow.py::test_rate_limited_submission_is_queued_then_retried",
        "tests/integration/test_apiinone_flow.py::test_status_synonyms",
        "tests/integration/test_apiinone_flow.py::test_webp_is_accepted_and_its_image_mirrored",
        "tests/integration/test_apiinone_flow.py::test_what_apiinone_cannot_honour_is_refused",
        "tests/integration/test_apiinone_flow.py::test_wrapped_and_unwrapped_answers",
        "tests/integration/test_forwarding.py::test_a_finished_job_reaches_every_destination_once",
        "tests/integration/test_forwarding.py::test_failed_sends_are_retried_with_the_same_event_id",
        "tests/integration/test_forwarding.py::test_low_credits_are_told_once_per_crossing",
        "tests/integration/test_forwarding.py::test_notify_on_filters_job_events",
        "tests/integration/test_forwarding.py::test_rate_limited_destination_is_retried_after_its_retry_after",
        "tests/integration/test_fuzz_findings.py::test_a_callback_nested_past_the_stack_is_refused",
        "tests/integration/test_fuzz_findings.py::test_a_task_id_bound_by_a_callback_is_polled_whatever_it_holds",
        "tests/integration/test_fuzz_findings.py::test_a_task_id_with_control_characters_is_refused",
        "tests/integration/test_fuzz_findings.py::test_resend_is_strict_about_what_it_resends",
        "tests/integration/test_fuzz_findings.py::test_the_simulator_refuses_json_nested_too_deep",
        "tests/integration/test_hostile_callbacks.py::test_a_client_trickling_its_request_blocks_no_one",
        "tests/integration/test_hostile_callbacks.py::test_bodies_over_256_kib_however_framed",
        "tests/integration/test_hostile_callbacks.py::test_bodies_that_are_not_utf8_json_objects",
        "tests/integration/test_hostile_callbacks.py::test_forged_and_tampered_tokens_are_404_and_reveal_nothing",
        "tests/integration/test_hostile_callbacks.py::test_huge_headers_and_targets_are_refused_cleanly",
        "tests/integration/test_hostile_callbacks.py::test_path_traversal_in_image_routes",
        "tests/integration/test_hostile_callbacks.py::test_repeated_check_headers_are_refused_not_resolved_by_picking_one",
        "tests/integration/test_hostile_callbacks.py::test_timestamps_that_are_stale_future_or_not_integers",
        "tests/integration/test_key_rotation.py::test_old_urls_verify_after_rotation_and_new_ones_use_the_new_key",
        "tests/integration/test_mirroring.py::test_a_media_directory_that_cannot_be_written_is_one_line_and_a_retry",
        "tests/integration/test_mirroring.py::test_an_image_that_cannot_be_fetched_is_retried_and_the_job_stays_completed",
        "tests/integration/test_mirroring.py::test_completed_images_are_mirrored_and_served_byte_for_byte",
        "tests/integration/test_mirroring.py::test_images_route_refuses_what_is_not_there",
        "tests/integration/test_mirroring.py::test_mirroring_can_be_turned_off",
        "tests/integration/test_openapi.py::test_the_document_is_served_without_a_token",
        "tests/integration/test_operations.py::test_metrics_count_what_happened",
        "tests/integration/test_operations.py::test_providers_route_shows_health_and_today",
        "tests/integration/test_operations.py::test_readyz_fails_when_a_background_loop_has_stopped",
        "tests/integration/test_operations.py::test_stream_sends_each_change_as_it_is_committed",
        "tests/integration/test_provider_misbehaviour.py::test_a_final_status_flipped_by_a_poll_keeps_the_first",
        "tests/integration/test_provider_misbehaviour.py::test_a_poll_that_never_ends_is_cut_and_others_go_on",
        "tests/integration/test_provider_misbehaviour.py::test_a_submission_whose_answer_never_ends_is_uncertain_and_others_go_on",
        "tests/integration/test_provider_misbehaviour.py::test_an_unreadable_answer_to_a_submission_is_uncertain_and_never_resent",
        "tests/integration/test_provider_misbehaviour.py::test_callback_bodies_that_disagree_with_their_headers",
        "tests/integration/test_provider_misbehaviour.py::test_the_outbox_goes_on_past_a_destination_that_hangs",
        "tests/integration/test_segmind_flow.py::test_a_call_longer_than_the_submit_timeout_but_within_the_sync_timeout_completes",
        "tests/integration/test_segmind_flow.py::test_a_call_without_answer_fails_as_uncertain_and_is_never_resent",
        "tests/integration/test_segmind_flow.py::test_every_field_on_the_wire",
        "tests/integration/test_segmind_flow.py::test_images_route_refuses_what_it_does_not_hold",
        "tests/integration/test_segmind_flow.py::test_not_enough_credits_fails_the_job_without_retry",
        "tests/integration/test_segmind_flow.py::test_png_is_served_as_png",
        "tests/integration/test_segmind_flow.py::test_server_error_is_retried_then_completes",
        "tests/integration/test_segmind_flow.py::test_submission_answers_at_once_and_the_image_is_held",
        "tests/integration/test_segmind_flow.py::test_unauthorized_fails_the_job",
        "tests/integration/test_segmind_flow.py::test_what_segmind_cannot_honour_is_refused_and_nothing_is_sent",
        "tests/integration/test_simulator.py::test_mounted_simulator_only_calls_back_to_jobhook",
    }
)


# A job id made at collection time (a parameter such as f"/v1/jobs/{new_job_id()}") differs between
# runs and between pytest-xdist's workers, which must collect the same test ids: name it by its shape.
JOB_ID = re.compile(r"job_[0-9A-HJKMNP-TV-Z]{26}")


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    if isinstance(val, str) and JOB_ID.search(val):
        return JOB_ID.sub("job_ID", val)
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        engines = ENGINES
        if metafunc.definition.get_closest_marker("sqlite_only") or (
            not POSTGRESQL_ALL and metafunc.definition.nodeid.split("[", 1)[0] in SQLITE_IS_ENOUGH
        ):
            engines = tuple(engine for engine in ENGINES if engine == "sqlite")
        metafunc.parametrize("database", engines, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, in a temporary directory."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the suite on PostgreSQL too: {reason}")
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[str]:
    """A new PostgreSQL database, for the tests about PostgreSQL alone (not run on both engines)."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """JOBHOOK_DATABASE for this test: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "jobhook.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url


@dataclasses.dataclass
class Service:
    """A running jobhook: its URL, an HTTP client on it, and its settings."""

    url: str
    client: httpx.AsyncClient
    settings: Settings
    runtime: Runtime

    async def submit(self, expect: int = 202, headers: Mapping[str, str] | None = None, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/jobs", json=body, headers=dict(headers or {}))
        assert response.status_code == expect, response.text
        return response.json()  # type: ignore[no-any-return]

    async def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        response = await self.client.get(f"/v1/jobs/{job_id}", params=params)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's whole history, every page of it."""
        events: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            response = await self.client.get(f"/v1/jobs/{job_id}/events", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            events.extend(page["events"])
            if page["next_cursor"] is None:
                return events
            params["cursor"] = page["next_cursor"]

    async def wait_finished(self, job_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            job = await self.job(job_id, wait=max(0.1, min(remaining, 5)))
            if job["status"] in FINISHED or remaining <= 0:
                return job


ServiceFactory = Callable[..., contextlib.AbstractAsyncContextManager[Service]]


@pytest.fixture
def jobhook(tmp_path: Path, database: str) -> ServiceFactory:
    """`async with jobhook(JOBHOOK_X="…") as svc:` runs the real app under uvicorn on loopback.

    Defaults suit tests: a public URL pointing at itself, short poll intervals and grace. `clock`: the
    app's time (the store's, the engine's, the loops'), for a test that needs another day.
    """

    @contextlib.asynccontextmanager
    async def start(*, clock: Callable[[], float] = time.time, **env: str) -> AsyncIterator[Service]:
        sock = free_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        environ = {
            "JOBHOOK_DATABASE": database,
            "JOBHOOK_MEDIA_DIR": str(tmp_path / "media"),
            "JOBHOOK_PUBLIC_URL": url,
            "JOBHOOK_CALLBACK_GRACE": "1",
            "JOBHOOK_POLL_INTERVAL": "0.2",
            "JOBHOOK_POLL_MAX_INTERVAL": "0.5",
            "JOBHOOK_SIMULATOR_LATENCY": "0.2",
            "JOBHOOK_SIMULATOR_CALLBACK_RETRIES": "0,0.3,0.6",
            "JOBHOOK_SIMULATOR_SEED": "7",
            "JOBHOOK_SUBMIT_TIMEOUT": "2",
        }
        environ.update(env)
        environ = {key: value for key, value in environ.items() if value != "<unset>"}
        settings = Settings.from_environ(environ)
        app = create_app(settings, self_url=url, clock=clock)
        async with (
            serve_asgi(app, sock=sock, http=server_protocol()) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as client,
        ):
            yield Service(url, client, settings, app.state.runtime)

    return start


@contextlib.asynccontextmanager
async def replica_stores(
    database: str, count: int = 3, policy: OutboxPolicy | None = None
) -> AsyncIterator[list[Store]]:
    """`count` stores open on one database, as replicas (or processes on one SQLite file) hold them."""
    settings = Settings.from_environ({"JOBHOOK_DATABASE": database})
    opened = [make_store(settings, policy=policy) for _ in range(count)]
    for store in opened:
        await store.open()
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def new_stored_job(provider: str = "aivideoapi", *candidates: str, lease: float = 60.0) -> NewJob:
    """A job for `Store.create_job` that jobhook sends at once (its lease `lease` seconds from now), to
    `provider` and then `candidates`: what the store tests of replicas make by the dozen."""
    return NewJob(
        id=new_job_id(),
        provider=provider,
        request={"prompt": "x"},
        metadata=None,
        callback_url_registered=False,
        submitted_by_backend=False,
        idempotency_key=None,
        request_hash="h",
        deadline_at=time.time() + 600,
        submit_lease_until=time.time() + lease,
        candidates=tuple(Candidate(name) for name in candidates),
    )


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Await `check()` until it returns something truthy (it may be a coroutine function)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
