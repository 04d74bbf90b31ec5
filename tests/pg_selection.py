"""Which tests need their PostgreSQL run: the measurement behind tests/conftest.py's SQLITE_IS_ENOUGH.

    .venv/bin/python -m tests.pg_selection            # ≈ 5 min: measure, print the list and the figures
    .venv/bin/python -m tests.pg_selection --verify   # then the PostgreSQL half as `make test` runs it, compared

Every test that asks for `database` runs on SQLite. On PostgreSQL, what it can find that SQLite's run
did not is in the code PostgreSQL runs differently: the store (TARGETS). So this runs every test on
PostgreSQL (JOBHOOK_TEST_POSTGRESQL=all) under coverage, branches on, one coverage context per test,
over TARGETS, and chooses:

- every test of KEEP (the store's own tests, concurrency and purge, whose point is the engine), then
- greedily the test that adds the most lines and branches not yet covered per second it takes, until
  every line and branch the whole PostgreSQL half covered is covered, then drops any chosen test that
  the others make redundant (the slowest first).

The tests left over are printed in the form SQLITE_IS_ENOUGH takes: their PostgreSQL run covers nothing
in TARGETS that the kept tests do not. Tests run as child processes (tests/acceptance: `jobhook serve`
started, killed, restarted) are out of this measurement: coverage does not follow them there, and they
all keep their PostgreSQL run.

`--verify` runs the PostgreSQL half with SQLITE_IS_ENOUGH applied, under the same coverage, and prints
any line or branch of TARGETS that the full half covered and it did not, with the tests that covered it.

A few branches are taken only when a race goes one way (a duplicate webhook that comes after the job
finished, a callback after a poll), so the tests that cover them, and the proposed list, vary a little
between runs. Run it twice and put in SQLITE_IS_ENOUGH only the tests both runs propose. Measured on
2026-12-04: 139 test functions, 1,278 lines and branches; each run proposed 105 (the 34 others cover
everything); 102 in both. A verify run of the 34 kept by the first missed two race-taken branches
(common.py 351->356, tx.py 259->exit); the intersection keeps tests that took each of them.
Verified again after PostgreSQL's callback batches (schema 12, pg_batches.py among TARGETS): the
selected half covers 2,200 of 2,200.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = [
    "service/store/postgres.py",
    "service/store/pg_callback.py",
    "service/store/pg_batches.py",
    "service/store/tx.py",
    "service/store/common.py",
    "service/store/outbox_queries.py",
    "service/store/purge_queries.py",
    "service/store/base.py",
    "service/store/engines.py",
    "service/maintenance.py",
]
KEEP_MODULES = (
    "tests/integration/test_store.py",
    "tests/integration/test_duplicate_storm.py",
    "tests/integration/test_maintenance.py",
)
DURATIONS_ENV = "JOBHOOK_PG_SELECTION_DURATIONS"


# ---- the pytest plugin (-p tests.pg_selection): PostgreSQL tests only, one coverage context each ----


def _on_postgresql(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    engine = callspec.params.get("database") if callspec is not None else None
    return engine == "postgresql" or "pg" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = [item for item in items if _on_postgresql(item) and not item.nodeid.startswith("tests/acceptance/")]
    config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
    items[:] = chosen


def function_of(nodeid: str) -> str:
    return nodeid.split("[", 1)[0]


_durations: dict[str, float] = collections.defaultdict(float)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    import coverage

    current = coverage.Coverage.current()
    if current is not None:
        current.switch_context(function_of(item.nodeid))
    started = time.monotonic()
    yield
    _durations[function_of(item.nodeid)] += time.monotonic() - started
    if current is not None:
        current.switch_context("")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(DURATIONS_ENV)
    if path:
        Path(path).write_text(json.dumps(_durations, indent=1))


# ---- the measurement ----------------------------------------------------------------------------


def measure(folder: Path, *, all_tests: bool) -> tuple[dict[str, set[tuple[str, Any]]], dict[str, float]]:
    """Run the PostgreSQL tests under coverage: {test function: its lines and arcs in TARGETS}, durations."""
    rc = folder / "coveragerc"
    data = folder / ("all.coverage" if all_tests else "selected.coverage")
    durations = folder / ("all.json" if all_tests else "selected.json")
    rc.write_text(
        "[run]\nbranch = True\nparallel = False\n"
        f"data_file = {data}\n"
        "include =\n" + "".join(f"    {ROOT / target}\n" for target in TARGETS)
    )
    env = {
        **os.environ,
        "JOBHOOK_TEST_ENGINES": "postgresql",
        DURATIONS_ENV: str(durations),
    }
    if all_tests:
        env["JOBHOOK_TEST_POSTGRESQL"] = "all"
    else:
        env.pop("JOBHOOK_TEST_POSTGRESQL", None)
    command = [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-p", "tests.pg_selection"]
    command += ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "tests"]
    print("$", " ".join(command), file=sys.stderr)
    subprocess.run(command, cwd=ROOT, env=env, check=True)

    import coverage

    covdata = coverage.CoverageData(basename=str(data))
    covdata.read()
    by_test: dict[str, set[tuple[str, Any]]] = collections.defaultdict(set)
    for filename in covdata.measured_files():
        short = str(Path(filename).relative_to(ROOT))
        for context in covdata.measured_contexts():
            if not context:
                continue
            covdata.set_query_contexts([context])
            for arc in covdata.arcs(filename) or ():
                by_test[context].add((short, arc))
    covdata.set_query_contexts(None)
    return dict(by_test), json.loads(durations.read_text())


def choose(by_test: dict[str, set[tuple[str, Any]]], durations: dict[str, float]) -> set[str]:
    """The tests to keep on PostgreSQL: KEEP, then a greedy cover of everything the others reach."""
    everything = set().union(*by_test.values()) if by_test else set()
    kept = {test for test in durations if test.startswith(KEEP_MODULES)}
    covered: set[tuple[str, Any]] = set().union(*(by_test.get(test, set()) for test in kept))
    while covered != everything:
        best = max(
            (test for test in by_test if test not in kept),
            key=lambda test: (len(by_test[test] - covered) / (durations.get(test, 1.0) + 0.2), test),
        )
        kept.add(best)
        covered |= by_test[best]
    for test in sorted(kept - {t for t in kept if t.startswith(KEEP_MODULES)}, key=lambda t: -durations.get(t, 0)):
        others = set().union(*(by_test.get(other, set()) for other in kept if other != test))
        if others >= everything:
            kept.discard(test)
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verify", action="store_true", help="also run the selected half and compare its coverage")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobhook-pgsel-") as tmp:
        folder = Path(tmp)
        by_test, durations = measure(folder, all_tests=True)
        everything = set().union(*by_test.values())
        kept = choose(by_test, durations)
        enough = sorted(test for test in durations if test not in kept and not test.startswith("tests/acceptance/"))
        total, kept_time = sum(durations.values()), sum(durations.get(test, 0) for test in kept)
        print(f"\n{len(durations)} test functions run on PostgreSQL in process, {total:.0f} s;")
        print(f"{len(everything)} lines and branches of {len(TARGETS)} files covered by them;")
        print(f"{len(kept)} tests cover all of them, {kept_time:.0f} s. SQLITE_IS_ENOUGH = frozenset({{")
        for test in enough:
            print(f'    "{test}",')
        print("})")
        if args.verify:
            selected, _ = measure(folder, all_tests=False)
            reached = set().union(*selected.values())
            missed = sorted(everything - reached)
            print(f"\nverify: the selected half covers {len(reached & everything)} of {len(everything)}")
            for filename, arc in missed:
                who = sorted(test for test, arcs in by_test.items() if (filename, arc) in arcs)
                print(f"  missed {filename} {arc}: covered in the full run by {', '.join(who)}")
            return 1 if missed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
