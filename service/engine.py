"""The operations on jobs: submit, poll, expire, bind. Routes and loops call these.

Each operation gathers data (the job, a provider's answer read by its adapter), asks the pure domain
what it means (a submission's outcome: `service.domain.attempt`), and hands the result to the store
as one transaction. Nothing here speaks SQL. Callbacks are taken by `service.callbacks`, images
mirrored by `service.mirror`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from service.config import Settings
from service.domain import attempt, backoff, budget, measure, request, routing
from service.domain import callbacks as verify
from service.domain import circuit as circuits
from service.domain import reroute as rerouting
from service.domain import status as status_machine
from service.domain.attempt import SubmitKind, SubmitResult
from service.domain.job import Candidate, Job
from service.domain.request import GenerationRequest, RequestError, Submission
from service.domain.status import Observation, Status
from service.domain.work import SubmitState, WorkKind
from service.errors import JobhookError
from service.ids import new_job_id
from service.media import MediaFile, MediaStore
from service.metrics import Metrics
from service.mirror import Downloader, Mirror
from service.polling import Polling
from service.providers.base import Adapter, Answer, ImageBytes, ProtocolError, Tracking, WireResponse
from service.providers.http import NotSent, ProviderHTTP, Uncertain
from service.store.base import NewJob
from service.store.common import Store
from service.watch import ChangeHub

log = logging.getLogger("jobhook")

MEASURE_TTL = 30.0  # seconds a read of the providers' measured latency serves "auto" routing
# A submission whose reservation a cap refused (it filled between routing and the transaction) is
# routed again with the figures as they are now, at most this many times (SPEC §9).
BUDGET_ROUTES = 4
POLL_LEASE = 45.0  # a poll is a 30 s HTTP call at most; a crashed one comes due again after this
# A synchronous provider's call runs from the work queue; the request that created the job waits this
# long for its first attempt to settle, so that an immediate refusal still answers 502 (SPEC §3).
SYNC_FIRST_ANSWER_WAIT = 1.0


def submit_lease(submit_timeout: float) -> float:
    """How long a submission may stay "sending": its HTTP timeout plus a margin to commit the answer.

    A job still "sending" after that was cut by a crash, and is treated as uncertain (never re-sent).
    """
    return submit_timeout + min(30.0, max(1.0, submit_timeout))


@dataclasses.dataclass
class ProviderRuntime:
    name: str
    adapter: Adapter
    http: ProviderHTTP | None  # None: known but not configured (no API key)
    # Where jobhook itself serves this provider's images (the built-in simulator): fetched unchecked.
    own_images: str | None = None

    @property
    def configured(self) -> bool:
        return self.http is not None


class IdempotencyMismatch(JobhookError):
    """The Idempotency-Key was used before with a different body."""

    def __init__(self, job: Job) -> None:
        super().__init__("this Idempotency-Key was used with a different request")
        self.job = job


class RerouteRefused(JobhookError):
    """The job cannot be rerouted now (service.domain.reroute says why)."""

    def __init__(self, refusal: rerouting.Refused) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class NotBackendSubmitted(JobhookError):
    """PATCH of a job that jobhook submitted itself: its task id is not the backend's to set."""


def request_fingerprint(submission: Submission) -> str:
    fields: dict[str, Any] = {
        "provider": submission.provider if isinstance(submission.provider, str) else list(submission.provider),
        "request": submission.request.to_json(),
        "metadata": submission.metadata,
        "submit": submission.submit,
    }
    # Only when set: a job made before max_price_usd existed keeps its fingerprint, so its key replays.
    if submission.max_price_usd is not None:
        fields["max_price_usd"] = submission.max_price_usd
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        providers: Mapping[str, ProviderRuntime],
        tokens: verify.CallbackTokens,
        hub: ChangeHub,
        media: MediaStore,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.media = media
        self.metrics = metrics or Metrics()
        self.providers = providers
        self.tokens = tokens
        self.media_tokens = verify.CallbackTokens(tokens.keys, salt=verify.MEDIA_SALT)
        self.hub = hub
        self.clock = clock
        self.rng = rng or random.Random()
        # A provider that answered 429 is left alone until then (soft state: harmless to lose).
        self.paused_until: dict[str, float] = {}
        # Each provider's measured latency, read at most every MEASURE_TTL s for JOBHOOK_ROUTE_ORDER=latency
        # (a scan of the recent attempts per "auto" job would cost more than a slightly stale order).
        self._measured: tuple[float, dict[str, measure.Measured]] | None = None
        self._nudge: Callable[[float], None] = lambda due_at: None
        self.polling = Polling(self)  # asking providers about jobs (service.polling)
        store.add_due_listener(lambda due_at: self._nudge(due_at))  # jobs a closing circuit releases
        store.add_attempt_listener(self.metrics.count_attempts)
        self.mirroring = Mirror(
            store,
            media,
            Downloader(settings.mirror_allow_networks),
            own_images={name: runtime.own_images for name, runtime in providers.items() if runtime.own_images},
            nudge=lambda due_at: self._nudge(due_at),
            clock=clock,
            rng=self.rng,
        )

    async def aclose(self) -> None:
        await self.mirroring.aclose()

    def submit_lease(self, runtime: ProviderRuntime) -> float:
        """How long a submission to this provider may stay "sending" before it counts as cut."""
        synchronous = runtime.adapter.tracking is Tracking.SYNCHRONOUS
        return submit_lease(self.settings.sync_timeout if synchronous else self.settings.submit_timeout)

    def on_schedule(self, nudge: Callable[[float], None]) -> None:
        """`nudge(due_at)` is called whenever work is scheduled, so the poller can wake earlier."""
        self._nudge = nudge

    def nudge(self, due_at: float) -> None:
        """Work was scheduled at `due_at`: the poller wakes for it if that is earlier than it would."""
        self._nudge(due_at)

    # -- helpers -----------------------------------------------------------------------------------

    def callback_url(self, job: Job) -> str | None:
        if self.settings.public_url is None:
            return None
        return f"{self.settings.public_url}/callbacks/{self.tokens.sign(job.id, job.provider)}"

    def runtime(self, name: str) -> ProviderRuntime:
        runtime = self.providers.get(name)
        if runtime is None:
            raise RequestError(
                "provider",
                "unknown_provider",
                f"unknown provider {name!r}; known: {', '.join(sorted(self.providers))}",
                sorted(self.providers),
            )
        return runtime

    def _callbacks_expected(self, runtime: ProviderRuntime) -> bool:
        return self.settings.public_url is not None and runtime.adapter.tracking in (
            Tracking.CALLBACK,
            Tracking.WEBHOOK_CONFIRM,
        )

    def first_poll_at(self, job: Job, now: float) -> float:
        """Callbacks expected: wait out the grace. Otherwise, or when the provider's callbacks are
        degraded, the first poll interval (SPEC §5)."""
        if job.callback_url_registered and job.provider not in self.store.degraded:
            return now + self.settings.callback_grace
        return now + self.settings.poll_interval

    def public_image_url(self, job: Job, index: int = 0) -> str | None:
        """The best URL for people (Slack, email) to see image `index`: jobhook's copy, signed and
        public under JOBHOOK_PUBLIC_URL, once it is held; else the provider's URL."""
        if job.held(index) is not None and self.settings.public_url is not None:
            return f"{self.settings.public_url}/media/{self.media_tokens.sign(job.id, str(index))}"
        return job.images[index] if index < len(job.images) else None

    def cost(self, job: Job, provider: str | None = None) -> float | None:
        """What the job costs at `provider` (by default its own): the images its request asked for, not
        however many a provider listed."""
        runtime = self.providers.get(provider or job.provider)
        return runtime.adapter.price_usd(job.request, status_machine.images_asked(job.request)) if runtime else None

    def facts(
        self,
        runtime: ProviderRuntime,
        generation: GenerationRequest,
        measured: Mapping[str, measure.Measured] | None = None,
    ) -> routing.Facts:
        """What routing needs to know of one provider for one request."""
        adapter = runtime.adapter
        return routing.facts(
            runtime.name,
            configured=runtime.configured,
            capabilities=adapter.capabilities,
            prices=adapter.prices,
            generation=generation,
            latency_p50=(measured or {}).get(runtime.name, measure.UNMEASURED).latency_p50_s,
        )

    async def measurements(self) -> Mapping[str, measure.Measured]:
        """Each provider's measured latency and success rate, at most MEASURE_TTL seconds old."""
        now = time.monotonic()
        if self._measured is None or now - self._measured[0] >= MEASURE_TTL:
            self._measured = (now, await self.store.provider_measurements(self.providers))
        return self._measured[1]

    async def wait_until(self, job_id: str, done: Callable[[Job], bool], timeout: float) -> Job | None:
        """The job as soon as `done(job)` holds, or as it is when `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            with self.hub.subscribe(job_id) as changed:
                job = await self.store.get_job(job_id)
                remaining = deadline - time.monotonic()
                if job is None or done(job) or remaining <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed, remaining)

    # -- submission --------------------------------------------------------------------------------

    async def route(self, submission: Submission) -> tuple[ProviderRuntime, tuple[Candidate, ...]]:
        """The provider to try first and the candidates after it, in order (SPEC §8).

        One provider named: as it always was (its own 422s). A list, or "auto": each candidate is
        checked by routing (configured, able to honour the request, within max_price_usd) and those
        left out are said in a 422 no_provider when none remains.
        """
        chosen = submission.provider
        measured: Mapping[str, measure.Measured] = {}
        if isinstance(chosen, str) and chosen != routing.AUTO:
            runtime = self.runtime(chosen)
            if not runtime.configured:
                env = f"JOBHOOK_{chosen.upper()}_API_KEY"
                raise RequestError(
                    "provider", "provider_not_configured", f"provider {chosen!r} has no API key: set {env}"
                )
            request.check(submission.request, runtime.adapter.capabilities, chosen)
            names: tuple[str, ...] = (chosen,)
            order = routing.Order()
        elif isinstance(chosen, str):  # "auto": every configured provider, in JOBHOOK_ROUTE_ORDER's order
            names = routing.auto_candidates([self.facts(item, submission.request) for item in self.providers.values()])
            order = self.settings.route_order
            if order.by is routing.OrderBy.LATENCY:
                measured = await self.measurements()
        else:
            names = tuple(self.runtime(name).name for name in chosen)  # an unknown name: 422 unknown_provider
            order = routing.Order()
        if len(names) > 1 and not submission.submit:
            raise RequestError(
                "submit", "unsupported_value", "a job the backend submits itself names one provider, not several"
            )
        # SPEC §8: over max_price_usd, or priced unknown under it, a candidate is left out (422 no_provider).
        facts = {name: self.facts(self.providers[name], submission.request, measured) for name in names}
        if submission.submit and self.settings.budget:
            facts = await self._budget_facts(facts, submission.request)
        route = routing.choose(names, facts, max_price_usd=submission.max_price_usd, order=order)
        over = [item.refusal for item in route.left_out if item.reason is routing.Reason.OVER_BUDGET and item.refusal]
        await self._tell_exhausted(over)
        if not route.candidates and over:
            # SPEC §9: nothing sent, no job made; the backend may try again at the reset.
            named = budget.first_refusal(over)
            assert named is not None
            raise budget.BudgetExceeded(named, route.left_out)
        if not route.candidates:
            raise routing.NoProvider(
                route.left_out
                or [routing.LeftOut(routing.AUTO, routing.Reason.NOT_CONFIGURED, "no provider is configured")]
            )
        names = route.candidates
        if len(names) > 1:
            # A provider whose circuit is open is tried last (SPEC §8): the job goes to one that may
            # take it now; when every one is open, the job waits for the first (as a single one does).
            stored, now = await self.store.provider_circuits(), self.clock()
            shut = {
                name
                for name in names
                if name in stored and isinstance(circuits.may_try(stored[name], now), circuits.Blocked)
            }
            names = tuple(name for name in names if name not in shut) + tuple(name for name in names if name in shut)
        first, *rest = (self.providers[name] for name in names)
        return first, tuple(Candidate(item.name, self._callbacks_expected(item)) for item in rest)

    async def _budget_facts(
        self, facts: Mapping[str, routing.Facts], generation: GenerationRequest
    ) -> dict[str, routing.Facts]:
        """`facts` with each candidate that today's caps refuse marked so (SPEC §9): read now, checked
        again by the transaction that reserves the price (this read only spares a doomed attempt)."""
        now = self.clock()
        figures = await self.store.budget_figures(budget.day_of(now))
        wanted = generation.to_json()
        marked = dict(facts)
        for name, item in facts.items():
            price = budget.price_of(self.providers[name].adapter.prices, wanted)
            refusal = budget.check(self.settings.budget, figures, name, price, now)
            if refusal is not None:
                marked[name] = dataclasses.replace(item, over_budget=refusal)
        return marked

    async def _tell_exhausted(self, refusals: list[budget.Refusal]) -> None:
        """A cap left a candidate out: `budget.exhausted`, the first time today for its scope."""
        told: set[str] = set()
        for refusal in refusals:
            if refusal.figures.exhausted_at is None and refusal.scope not in told:
                told.add(refusal.scope)
                await self.store.budget_exhausted(refusal)

    async def create(self, submission: Submission, idempotency_key: str | None) -> tuple[Job, bool]:
        """Validate, record, and (unless `submit` is false) send. Returns (job, created).

        A daily cap that refuses the first attempt in the transaction (it filled since routing read
        the figures) routes the submission again: to another candidate, or to a 429 (SPEC §9)."""
        try:
            for _ in range(BUDGET_ROUTES - 1):
                try:
                    return await self._create(submission, idempotency_key)
                except budget.OverBudget:
                    continue
            try:
                return await self._create(submission, idempotency_key)
            except budget.OverBudget as exc:
                raise budget.BudgetExceeded(exc.refusal) from None
        except budget.BudgetExceeded:
            # The key's promise holds whatever today's budget: a replay answers the job made before.
            made = await self.store.job_by_idempotency_key(idempotency_key) if idempotency_key else None
            if made is None:
                raise
            return await self._replay(made, request_fingerprint(submission)), False

    async def _replay(self, job: Job, request_hash: str | None) -> Job:
        """The job an Idempotency-Key already made, as its first request answers it."""
        if job.request_hash != request_hash:
            raise IdempotencyMismatch(job)
        if job.submit_state is SubmitState.SENDING:
            # The first request is still talking to the provider: answer what it will answer.
            settled = await self.wait_until(
                job.id, lambda j: j.submit_state is not SubmitState.SENDING, self.settings.submit_timeout + 5
            )
            job = settled or job
        return job

    async def _create(self, submission: Submission, idempotency_key: str | None) -> tuple[Job, bool]:
        runtime, candidates = await self.route(submission)
        synchronous = runtime.adapter.tracking is Tracking.SYNCHRONOUS
        if synchronous and not submission.submit:
            raise RequestError(
                "submit",
                "unsupported_value",
                f"{runtime.name} answers the submission itself with the images: jobhook must submit it",
            )
        now = self.clock()
        new = NewJob(
            id=new_job_id(),
            provider=runtime.name,
            request=submission.request.to_json(),
            metadata=submission.metadata,
            callback_url_registered=self._callbacks_expected(runtime),
            submitted_by_backend=not submission.submit,
            idempotency_key=idempotency_key,
            request_hash=request_fingerprint(submission),
            deadline_at=now + self.settings.job_timeout,
            # A synchronous call may take minutes: the work queue makes it, not this request.
            submit_lease_until=now + self.submit_lease(runtime) if submission.submit and not synchronous else None,
            submit_at=now if synchronous else None,
            candidates=candidates,
            max_price_usd=submission.max_price_usd,
        )
        job, created = await self.store.create_job(new, self._request_lease)
        if not created:
            return await self._replay(job, new.request_hash), False
        self._nudge(now if synchronous else new.deadline_at)
        if job.submit_state is SubmitState.SENDING:
            job = await self._send(job)
        elif synchronous:
            job = await self.wait_until(job.id, _first_attempt_settled, SYNC_FIRST_ANSWER_WAIT) or job
        elif submission.submit:
            self._nudge(now)  # its provider's circuit is open: the job waits queued, due at the circuit's end
        return job, True

    async def _send(self, job: Job) -> Job:
        """One attempt at the provider; the job must be marked "sending" (committed) before this."""
        runtime = self.runtime(job.provider)
        assert runtime.http is not None
        callback_url = self.callback_url(job) if job.callback_url_registered else None
        wire = runtime.adapter.submit_request(GenerationRequest.from_json(job.request), callback_url)
        synchronous = runtime.adapter.tracking is Tracking.SYNCHRONOUS
        started = time.monotonic()
        try:
            response = await runtime.http.send(wire, submission=True)
        except NotSent as exc:
            result = attempt.not_sent(str(exc), now=self.clock(), backoff=self._submit_backoff(job))
        except Uncertain as exc:
            result = attempt.uncertain({"reason": "no_answer", "message": str(exc)}, synchronous=synchronous)
        else:
            result = await self._submit_result(job, runtime, response)
        self.metrics.submit_seconds.labels(job.provider).observe(time.monotonic() - started)
        self.metrics.submissions.labels(job.provider, str(result.kind)).inc()
        stored = await self.store.record_submit(job.id, result, claim_next=True)
        level = logging.WARNING if result.kind is not SubmitKind.ACCEPTED else logging.INFO
        log.log(level, "submit %s %s: %s", job.id, job.provider, result.kind)
        if len(stored.attempts) <= len(job.attempts):
            if result.retry_at is not None:
                self._nudge(result.retry_at)
            elif result.first_poll_at is not None:
                self._nudge(result.first_poll_at)
            return stored
        # The attempt ended not_sent or rejected and the job moved to its next candidate (SPEC §8). The
        # refusal is committed, the next attempt only due: it is claimed now, in a transaction of its
        # own, then sent. Killed between the two, jobhook finds it due after a restart and sends it once.
        log.warning("failover %s from %s to %s", job.id, job.provider, stored.provider)
        sending = await self.store.begin_submit(job.id, self._request_lease, take_due=True)
        if sending is not None:
            return await self._send(sending)
        # Waiting for a circuit, or the work queue's to send (woken by the store when it is).
        return await self.store.get_job(job.id) or stored

    def _request_lease(self, provider: str) -> float | None:
        """The lease of a submission to `provider` sent now by the request at hand; None for a
        synchronous provider (its call may take minutes: the work queue makes it, as always)."""
        runtime = self.providers.get(provider)
        if runtime is None or not runtime.configured or runtime.adapter.tracking is Tracking.SYNCHRONOUS:
            return None
        return self.clock() + self.submit_lease(runtime)

    def _queue_lease(self, provider: str) -> float:
        """The lease of a submission to `provider` sent now by the work queue."""
        return self.clock() + self.submit_lease(self.runtime(provider))

    def _submit_backoff(self, job: Job) -> float:
        """The wait before the job's next submission: it grows with the tries of its current attempt
        (a provider the job moved to starts again from the first interval)."""
        settings = self.settings
        return backoff.delay(
            max(0, attempt.tries(job) - 1), settings.poll_interval, settings.poll_max_interval, self.rng
        )

    async def _submit_result(self, job: Job, runtime: ProviderRuntime, response: WireResponse) -> SubmitResult:
        """Read a provider's answer to a submission into an outcome (`service.domain.attempt`)."""
        detail: dict[str, Any] = {"http_status": response.status}
        synchronous = runtime.adapter.tracking is Tracking.SYNCHRONOUS
        try:
            answer = runtime.adapter.parse_submit(response)
        except ProtocolError as exc:
            return attempt.unreadable(detail, str(exc), synchronous=synchronous)
        if answer.credits_remaining is not None:
            detail["credits_remaining"] = answer.credits_remaining
        if answer.answer is Answer.REJECTED:
            assert answer.error is not None
            return attempt.rejected(
                detail, answer.error, http_status=response.status, credits_remaining=answer.credits_remaining
            )
        now = self.clock()
        if answer.answer is Answer.RETRY:
            assert answer.error is not None
            detail.update(provider_code=answer.error.provider_code, message=answer.error.message)
            asked = backoff.retry_after(answer.retry_after, now)
            return attempt.retry(detail, now=now, backoff=self._submit_backoff(job), asked=asked)
        observation = answer.observation
        media: tuple[MediaFile, ...] = ()
        if answer.images:  # a synchronous answer: the images themselves, kept before the job says so
            kept, ignored = status_machine.keep_images(answer.images, status_machine.images_asked(job.request))
            media = tuple(await self._keep(job.id, kept))
            observation = Observation(Status.COMPLETED)
            detail["images"] = len(media)
            if ignored:
                detail["images_ignored"] = ignored
        images = len(observation.images) if observation is not None else 0
        return attempt.accepted(
            detail,
            task_id=answer.task_id,
            observation=observation,
            media=media,
            first_poll_at=self.first_poll_at(job, now) if answer.task_id else None,
            # Images came: by URL, or (a synchronous provider) as the bytes now held.
            cost_usd=self.cost(job) if images or media else None,
            credits_remaining=answer.credits_remaining,
        )

    async def _keep(self, job_id: str, images: tuple[ImageBytes, ...]) -> list[MediaFile]:
        return [
            await self.media.save(job_id, index, image.data, image.content_type) for index, image in enumerate(images)
        ]

    async def resubmit(self, job_id: str) -> None:
        """A queued job's 'submit' row came due: try again, or settle a submission cut by a crash."""
        job = await self.store.get_job(job_id)
        if job is None:
            return
        if job.status is not Status.QUEUED or job.submitted_by_backend:
            await self.store.unschedule(job_id, WorkKind.SUBMIT)
            return
        if job.submit_state is SubmitState.SENDING:
            # Its lease ran out: jobhook stopped while the request was in flight. Never re-send.
            detail = {"reason": "interrupted", "message": "jobhook stopped while the submission was in flight"}
            synchronous = self.runtime(job.provider).adapter.tracking is Tracking.SYNCHRONOUS
            await self.store.record_submit(job_id, attempt.uncertain(detail, synchronous=synchronous))
            return
        sending = await self.store.begin_submit(job_id, self._queue_lease)
        if sending is not None:
            await self._send(sending)

    # -- polling -----------------------------------------------------------------------------------

    async def expire(self, job_id: str) -> None:
        job = await self.store.expire(job_id)
        if job.status in (Status.TIMED_OUT, Status.FAILED):
            log.warning("deadline %s %s: %s", job.id, job.provider, job.status)

    # -- rerouting (SPEC §8) -----------------------------------------------------------------------

    async def reroute(self, job: Job, from_attempt: int | None) -> tuple[Job, bool]:
        """`POST /v1/jobs/{id}/reroute`: move the job to its next candidate now and send it there, within
        the request as a new job's first attempt is. `from_attempt`: the attempt to leave (None: the one
        current when `job` was read). Returns the job and whether it moved (False: that attempt had been
        left already). RerouteRefused when it cannot be rerouted."""
        current = job.current_attempt()
        leaving = from_attempt if from_attempt is not None else (current.seq if current is not None else None)
        now = self.clock()
        verdict, moved = await self.store.reroute(job.id, leaving, deadline_at=now + self.settings.job_timeout)
        if isinstance(verdict, rerouting.Refused):
            raise RerouteRefused(verdict)
        if not isinstance(verdict, rerouting.Reroute):
            return moved, False
        charge = "both may charge" if verdict.alive else "nothing was sent before"
        log.warning("reroute %s from %s to %s: %s", job.id, job.provider, moved.provider, charge)
        self._nudge(now)  # its late polls and its deadline
        if moved.status is Status.QUEUED:
            # Claimed in a transaction of its own, as a failover's next attempt is (`_send`): never one
            # a worker already holds; a synchronous provider's call is left to the work queue.
            sending = await self.store.begin_submit(job.id, self._request_lease, take_due=True)
            if sending is not None:
                return await self._send(sending), True
            self._nudge(now)  # waiting for a circuit or a budget, or the work queue's to send
            moved = await self.store.get_job(job.id) or moved
        return moved, True

    # -- the backend's own submissions -------------------------------------------------------------

    async def bind(self, job_id: str, task_id: str) -> Job:
        """`PATCH /v1/jobs/{id}`: a job the backend submitted itself gets its task id."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise KeyError(job_id)
        if not job.submitted_by_backend:
            raise NotBackendSubmitted("jobhook submitted this job itself; its task id is not the backend's to set")
        first_poll = self.first_poll_at(job, self.clock())
        bound = await self.store.bind_task_id(job_id, task_id, first_poll)
        self._nudge(first_poll)
        return bound


def _first_attempt_settled(job: Job) -> bool:
    return job.status is not Status.QUEUED or (job.submit_attempts > 0 and job.submit_state is not SubmitState.SENDING)
