"""Prometheus metrics (`/metrics`), with prometheus-client's own registry per app.

Counters and histograms are incremented where things happen; gauges that describe stored state (jobs
by status, outbox depth) are read from the database at scrape time, from tables kept in step by the
same transactions (job_counts is maintained by triggers), so a scrape never scans the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from service.domain import budget
from service.domain.circuit import Circuit, CircuitState
from service.domain.measure import Measured
from service.loop import WorkLoop
from service.store.base import WriterStats
from service.store.common import Store

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            "jobhook_callback_deliveries",
            "Callback deliveries by provider and outcome (accepted, duplicate, refused; unavailable: answered 503"
            " because the database could not take the write) and refusal reason",
            ["provider", "outcome", "reason"],
            registry=r,
        )
        self.callback_seconds = Histogram(
            "jobhook_callback_seconds",
            "Time from a callback's arrival to its answer (verification and commit)",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.submissions = Counter(
            "jobhook_submissions",
            "Submission attempts by provider and outcome (accepted, rejected, retry, uncertain, failed)",
            ["provider", "outcome"],
            registry=r,
        )
        self.attempts_ended = Counter(
            "jobhook_attempts_ended",
            "Attempts ended by provider and final state (SPEC §8: not_sent and rejected when left for the next "
            "candidate, completed, failed); counted where this replica commits them",
            ["provider", "state"],
            registry=r,
        )
        self.failovers = Counter(
            "jobhook_failovers",
            "Jobs moved to their next candidate provider, by the provider left, the one tried next and why "
            "(not_sent, rejected, failed; reroute: the backend asked, and both may charge)",
            ["from", "to", "reason"],
            registry=r,
        )
        self.submit_seconds = Histogram(
            "jobhook_submit_seconds",
            "Time of a submission call to the provider",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.polls = Counter(
            "jobhook_polls",
            "Polls by provider and outcome (the status seen, or the failure)",
            ["provider", "outcome"],
            registry=r,
        )
        self.notifications = Counter(
            "jobhook_notification_attempts",
            "Notification delivery attempts by destination and outcome (delivered, retry, dead)",
            ["destination", "outcome"],
            registry=r,
        )
        self.jobs = Gauge("jobhook_jobs", "Jobs by provider and status", ["provider", "status"], registry=r)
        self.outbox_pending = Gauge(
            "jobhook_outbox_pending", "Notification deliveries waiting to be made", ["destination"], registry=r
        )
        self.outbox_dead = Gauge(
            "jobhook_outbox_dead",
            "Notification deliveries given up (see jobhook outbox --dead)",
            ["destination"],
            registry=r,
        )
        self.degraded = Gauge(
            "jobhook_provider_callbacks_degraded",
            "1 while a provider's callbacks are marked degraded",
            ["provider"],
            registry=r,
        )
        self.circuit = Gauge(
            "jobhook_provider_circuit_state",
            "1 for the state each provider's circuit is in (closed, open, half_open), 0 for the others",
            ["provider", "state"],
            registry=r,
        )
        self.latency = Gauge(
            "jobhook_provider_latency_seconds",
            "Submission to final of the completed jobs among each provider's last 100 finished (SPEC §8), by "
            "quantile (0.5, 0.9); absent until one completed; at most 30 s old",
            ["provider", "quantile"],
            registry=r,
        )
        self.success = Gauge(
            "jobhook_provider_success_ratio",
            "Completed / finished over each provider's last 100 finished jobs; absent until one finished",
            ["provider"],
            registry=r,
        )
        self.measured_jobs = Gauge(
            "jobhook_provider_jobs_measured",
            "Finished jobs the latency and success ratio are over",
            ["provider"],
            registry=r,
        )
        self.group_commit = _GroupCommit()
        r.register(self.group_commit)
        self.spend = _Spend()
        r.register(self.spend)
        self.loop_age = Gauge(
            "jobhook_loop_heartbeat_age_seconds", "Seconds since each background loop last woke", ["loop"], registry=r
        )

    def count_attempts(self, ended: Sequence[tuple[str, str]], failovers: Sequence[tuple[str, str, str]]) -> None:
        """A commit's ended attempts and failovers (Store.add_attempt_listener)."""
        for provider, state in ended:
            self.attempts_ended.labels(provider, state).inc()
        for left, following, reason in failovers:
            self.failovers.labels(left, following, reason).inc()

    async def render(
        self,
        store: Store,
        providers: Iterable[str],
        destinations: Iterable[str],
        loops: Mapping[str, WorkLoop],
        measured: Mapping[str, Measured] | None = None,
    ) -> bytes:
        """Read the stored state into the gauges, then the exposition text. `measured`: each
        provider's latency and success rate (the engine's cached read)."""
        for provider, figures in (measured or {}).items():
            for quantile, value in (("0.5", figures.latency_p50_s), ("0.9", figures.latency_p90_s)):
                if value is not None:
                    self.latency.labels(provider, quantile).set(value)
            if figures.success_rate is not None:
                self.success.labels(provider).set(figures.success_rate)
            self.measured_jobs.labels(provider).set(figures.jobs_measured)
        for (provider, status), count in (await store.job_counts()).items():
            self.jobs.labels(provider, status).set(count)
        counts = await store.outbox_counts()
        for destination in destinations:
            self.outbox_pending.labels(destination).set(counts.get(destination, {}).get("pending", 0))
            self.outbox_dead.labels(destination).set(counts.get(destination, {}).get("dead", 0))
        circuits = await store.provider_circuits()
        wall = time.time()
        for provider in providers:
            self.degraded.labels(provider).set(1 if provider in store.degraded else 0)
            state = circuits.get(provider, Circuit(provider)).state_at(wall)
            for each in CircuitState:
                self.circuit.labels(provider, str(each)).set(1 if each is state else 0)
        self.group_commit.stats = store.write_stats
        self.spend.by_provider = await store.spend_by_provider()
        now = time.monotonic()
        for name, loop in loops.items():
            self.loop_age.labels(name).set(round(now - loop.heartbeat, 3))
        return generate_latest(self.registry)


class _Spend(Collector):
    """What each provider's kept attempts came to (SPEC §9), from the day figures every replica shares."""

    def __init__(self) -> None:
        self.by_provider: dict[str, int] = {}

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "jobhook_spend_usd",
            "USD kept for attempts by provider, every UTC day recorded (SPEC §9): an attempt's price counts once "
            "the provider took it (accepted, uncertain, completed), and counts no more if the task then failed "
            "(resellers refund failed tasks)",
            labels=["provider"],
        )
        for provider, amount in sorted(self.by_provider.items()):
            family.add_metric([provider], budget.usd(amount))
        yield family


class _GroupCommit(Collector):
    """The writer's commits and the writes they held: writes / commits is the mean group size."""

    def __init__(self) -> None:
        self.stats = WriterStats()

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "jobhook_store_commits",
            "Write transactions committed (SQLite: one per group of writes; PostgreSQL: one per write)",
            value=self.stats.commits,
        )
        yield CounterMetricFamily(
            "jobhook_store_writes",
            "Writes committed (several share one commit when they queue up: group commit)",
            value=self.stats.writes,
        )
        yield CounterMetricFamily(
            "jobhook_store_write_seconds",
            "Time spent running the committed writes' statements (SQLite: in the event loop; PostgreSQL: in a pool thread)",
            value=self.stats.write_seconds,
        )
        yield CounterMetricFamily(
            "jobhook_store_commit_seconds",
            "Time from COMMIT to its return, fsync included",
            value=self.stats.commit_seconds,
        )
