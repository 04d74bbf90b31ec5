"""The names of due work, of the lanes it runs in, and of a submission's progress: pure, no I/O.

Their values are what the database holds (the `due` table's `kind` and `provider` columns, the
`jobs.submit_state` column): a StrEnum compares and stores as its value, so rows written before
these names existed read the same.
"""

from __future__ import annotations

import enum


class WorkKind(enum.StrEnum):
    """What a `due` row asks the poller to do for a job."""

    SUBMIT = "submit"  # send (or resend) the job's submission, or settle one cut by a crash
    POLL = "poll"  # ask the provider about the job's task
    CONFIRM = "confirm"  # the poll that checks a bare webhook's claim before it is applied
    DEADLINE = "deadline"  # JOBHOOK_JOB_TIMEOUT has come
    MIRROR = "mirror"  # fetch a completed job's images
    # Ask a provider about an attempt the job no longer follows but which may still deliver (SPEC §8: a
    # reroute left it alive, or another attempt finished the job first). One row per job, in the lane of
    # the provider it asks next; it goes round the job's such attempts, one poll each time.
    LATE_POLL = "late_poll"


# The due work that follows a job until it is final; mirroring and late polls outlive it.
TRACKING_KINDS: tuple[WorkKind, ...] = (WorkKind.SUBMIT, WorkKind.POLL, WorkKind.DEADLINE, WorkKind.CONFIRM)


class Lane(enum.StrEnum):
    """The lanes of work that calls no provider. A `due` row's lane bounds how many of its kind run at
    once; a provider's own work runs in the lane named after the provider."""

    INTERNAL = ""  # deadlines
    MIRROR = "_mirror"  # downloads of completed images


class SubmitState(enum.StrEnum):
    """Where a job jobhook submits itself stands with its provider (`jobs.submit_state`; NULL: no
    submission in flight, the next one may be sent)."""

    SENDING = "sending"  # a call is in flight (its 'submit' row is its lease); never sent twice
    DONE = "done"  # the provider answered (accepted, or refused for good), or a task id was bound
    UNCERTAIN = "uncertain"  # sent without a known outcome: never re-sent (a callback may bind it)
