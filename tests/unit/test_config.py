"""Settings (SPEC §1): defaults, one ConfigError naming the variable for each wrong value, `--env-file`."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import (
    DEFAULT_BASE_URLS,
    PROVIDER_NAMES,
    ConfigError,
    Secret,
    Settings,
    SimulatorSettings,
    http_url,
    known_setting_names,
    parse_duration,
    read_env_file,
    setting_warnings,
    shown_url,
)
from service.errors import JobhookError


def settings(**env: str) -> Settings:
    return Settings.from_environ(env)


def error_for(**env: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(env)
    return caught.value


def assert_names(error: ConfigError, variable: str) -> None:
    assert error.variable == variable
    assert str(error).startswith(f"{variable}: ")
    assert "\n" not in str(error)  # one line


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = settings()
    assert s.database == Path("./jobhook.db")
    assert s.media_dir == Path("./jobhook-media")
    assert s.public_url is None
    assert s.secrets == ()
    assert s.api_tokens == ()
    assert s.callback_grace == 60.0
    assert s.poll_interval == 5.0
    assert s.poll_max_interval == 60.0
    assert s.job_timeout == 1800.0
    assert s.timestamp_tolerance == 300.0
    assert s.log_format == "text"
    assert s.poll_concurrency >= 1
    assert s.simulator == SimulatorSettings()
    assert s.simulator.retry_delays == (0.0, 180.0, 600.0)  # PROVIDERS.md §1's schedule


def test_default_providers() -> None:
    s = settings()
    assert set(s.providers) == set(PROVIDER_NAMES) == {"aivideoapi", "apiframe", "segmind", "apiinone"}
    for name, provider in s.providers.items():
        assert provider.name == name
        assert provider.api_key is None
        assert not provider.configured
        assert provider.base_url == DEFAULT_BASE_URLS[name]
    assert s.providers["aivideoapi"].base_url == "https://api.aivideoapi.ai"


def test_blank_values_mean_unset() -> None:
    s = settings(JOBHOOK_POLL_INTERVAL="  ", JOBHOOK_PUBLIC_URL="", JOBHOOK_SECRET=" ", JOBHOOK_LOG_FORMAT="")
    assert (s.poll_interval, s.public_url, s.secrets, s.log_format) == (5.0, None, (), "text")


def test_explicit_values() -> None:
    s = settings(
        JOBHOOK_DATABASE="/var/lib/jobhook/j.db",
        JOBHOOK_MEDIA_DIR="/var/lib/jobhook/media",
        JOBHOOK_PUBLIC_URL="https://hooks.example.com/",
        JOBHOOK_SECRET="new, old",
        JOBHOOK_API_TOKENS="t1,t2,t3",
        JOBHOOK_AIVIDEOAPI_API_KEY=" sk-abc ",
        JOBHOOK_AIVIDEOAPI_BASE_URL="http://127.0.0.1:9000",
        JOBHOOK_CALLBACK_GRACE="0",
        JOBHOOK_POLL_INTERVAL="2s",
        JOBHOOK_POLL_MAX_INTERVAL="2m",
        JOBHOOK_JOB_TIMEOUT="1h",
        JOBHOOK_TIMESTAMP_TOLERANCE="30",
        JOBHOOK_LOG_FORMAT="JSON",
        JOBHOOK_SQLITE_SYNCHRONOUS="normal",
        JOBHOOK_POLL_CONCURRENCY="3",
        JOBHOOK_SIMULATOR="off",
        JOBHOOK_SIMULATOR_LATENCY="250ms",
        JOBHOOK_SIMULATOR_FAILURE_RATE="0.25",
        JOBHOOK_SIMULATOR_DROP_RATE="1",
        JOBHOOK_SIMULATOR_DUPLICATE_RATE="0",
        JOBHOOK_SIMULATOR_CALLBACK_RETRIES="0, 3m,10m",
        JOBHOOK_SIMULATOR_SEED="7",
    )
    assert s.database == Path("/var/lib/jobhook/j.db")
    assert s.media_dir == Path("/var/lib/jobhook/media")
    assert s.public_url == "https://hooks.example.com"  # no trailing slash: /callbacks/… is appended
    assert s.secrets == ("new", "old")
    assert all(isinstance(item, Secret) for item in s.secrets + s.api_tokens)
    assert s.api_tokens == ("t1", "t2", "t3")
    aivideoapi = s.providers["aivideoapi"]
    assert aivideoapi.api_key == "sk-abc" and isinstance(aivideoapi.api_key, Secret) and aivideoapi.configured
    assert aivideoapi.base_url == "http://127.0.0.1:9000"
    assert not s.providers["apiframe"].configured
    assert s.callback_grace == 0.0
    assert (s.poll_interval, s.poll_max_interval, s.job_timeout, s.timestamp_tolerance) == (2.0, 120.0, 3600.0, 30.0)
    assert s.log_format == "json"
    assert s.sqlite_synchronous == "NORMAL"
    assert s.poll_concurrency == 3
    assert s.simulator == SimulatorSettings(
        enabled=False,
        latency=0.25,
        failure_rate=0.25,
        drop_rate=1.0,
        duplicate_rate=0.0,
        retry_delays=(0.0, 180.0, 600.0),
        seed=7,
    )


# -- durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("5", 5.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("5s", 5.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("30d", 2_592_000.0),
        ("250ms", 0.25),
        (" 5 m ", 300.0),
        ("1.5m", 90.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "abc", "-5", "-5s", "5x", "5M", "m", "1e3", "inf", "nan", "5 5", "5.", "0x10", "5s5", "9" * 400]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


DURATION_VARIABLES = [
    "JOBHOOK_CALLBACK_GRACE",
    "JOBHOOK_POLL_INTERVAL",
    "JOBHOOK_POLL_MAX_INTERVAL",
    "JOBHOOK_JOB_TIMEOUT",
    "JOBHOOK_TIMESTAMP_TOLERANCE",
    "JOBHOOK_SUBMIT_TIMEOUT",
    "JOBHOOK_SIMULATOR_LATENCY",
]


@pytest.mark.parametrize("variable", DURATION_VARIABLES)
@pytest.mark.parametrize("value", ["abc", "-1", "-0.5s", "5 minutes", "1e3", "NaN", "inf", "5M", "1,5"])
def test_duration_errors_name_the_variable(variable: str, value: str) -> None:
    error = error_for(**{variable: value})
    assert_names(error, variable)
    assert repr(shown_url(value)) in str(error)  # the value itself, but for user info ("mailto:ops@…")


@pytest.mark.parametrize("variable", DURATION_VARIABLES)
def test_duration_variables_accept_units(variable: str) -> None:
    env = {variable: "5m"}
    if variable == "JOBHOOK_POLL_INTERVAL":
        env["JOBHOOK_POLL_MAX_INTERVAL"] = "5m"
    s = settings(**env)
    field = {
        "JOBHOOK_CALLBACK_GRACE": s.callback_grace,
        "JOBHOOK_POLL_INTERVAL": s.poll_interval,
        "JOBHOOK_POLL_MAX_INTERVAL": s.poll_max_interval,
        "JOBHOOK_JOB_TIMEOUT": s.job_timeout,
        "JOBHOOK_TIMESTAMP_TOLERANCE": s.timestamp_tolerance,
        "JOBHOOK_SUBMIT_TIMEOUT": s.submit_timeout,
        "JOBHOOK_SIMULATOR_LATENCY": s.simulator.latency,
    }[variable]
    assert field == 300.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOBHOOK_POLL_INTERVAL", "0"),
        ("JOBHOOK_POLL_MAX_INTERVAL", "0"),
        ("JOBHOOK_JOB_TIMEOUT", "0"),
        ("JOBHOOK_TIMESTAMP_TOLERANCE", "0"),
        ("JOBHOOK_TIMESTAMP_TOLERANCE", "0.5"),
        ("JOBHOOK_SUBMIT_TIMEOUT", "0"),
        ("JOBHOOK_SUBMIT_TIMEOUT", "50ms"),
    ],
)
def test_durations_below_their_minimum(variable: str, value: str) -> None:
    assert_names(error_for(**{variable: value}), variable)


def test_zero_grace_and_latency_are_allowed() -> None:
    s = settings(JOBHOOK_CALLBACK_GRACE="0", JOBHOOK_SIMULATOR_LATENCY="0")
    assert (s.callback_grace, s.simulator.latency) == (0.0, 0.0)


def test_half_a_second() -> None:
    assert settings(JOBHOOK_POLL_INTERVAL="0.5").poll_interval == 0.5


@pytest.mark.parametrize(("interval", "maximum"), [("10", "5"), ("61", None), ("2m", "1m"), ("1.01", "1")], ids=str)
def test_poll_max_below_poll_interval(interval: str, maximum: str | None) -> None:
    env = {"JOBHOOK_POLL_INTERVAL": interval}
    if maximum is not None:
        env["JOBHOOK_POLL_MAX_INTERVAL"] = maximum
    error = error_for(**env)
    assert_names(error, "JOBHOOK_POLL_MAX_INTERVAL")
    assert "JOBHOOK_POLL_INTERVAL" in error.message


def test_poll_max_equal_to_poll_interval() -> None:
    s = settings(JOBHOOK_POLL_INTERVAL="30", JOBHOOK_POLL_MAX_INTERVAL="30s")
    assert s.poll_interval == s.poll_max_interval == 30.0


# -- URLs -------------------------------------------------------------------------------------------

URL_VARIABLES = ["JOBHOOK_PUBLIC_URL"] + [f"JOBHOOK_{name.upper()}_BASE_URL" for name in PROVIDER_NAMES]
BAD_URLS = [
    "hooks.example.com",
    "//hooks.example.com",
    "https://",
    "https:///path",
    "http://:8080",
    "ftp://hooks.example.com",
    "file:///tmp/x",
    "ws://hooks.example.com",
    "mailto:ops@example.com",
    "https//hooks.example.com",
    "https://hooks.example.com:port",
    "https://hooks.example.com:99999",
    "https://[::1",
    "localhost:8000",
]


@pytest.mark.parametrize("variable", URL_VARIABLES)
@pytest.mark.parametrize("value", BAD_URLS)
def test_bad_urls_name_the_variable(variable: str, value: str) -> None:
    error = error_for(**{variable: value})
    assert_names(error, variable)
    assert repr(shown_url(value)) in str(error)  # the value itself, but for user info ("mailto:ops@…")


@pytest.mark.parametrize(
    "value",
    [
        "https://hooks.example.com",
        "http://127.0.0.1:8000",
        "https://hooks.example.com:8443/prefix",
        "http://[::1]:8000",
        "HTTPS://Hooks.Example.com",
        "http://localhost",
    ],
)
def test_good_urls(value: str) -> None:
    assert http_url("X", value) == value
    assert settings(JOBHOOK_PUBLIC_URL=value).public_url == value.rstrip("/")


@pytest.mark.parametrize(
    "value", ["https://hooks example.com", "https://hooks.example.com\tx", "https://exa<mple>.com"]
)
def test_malformed_host_is_refused(value: str) -> None:
    assert_names(error_for(JOBHOOK_PUBLIC_URL=value), "JOBHOOK_PUBLIC_URL")


# -- booleans, rates, integers, choices -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_booleans(value: str, expected: bool) -> None:
    assert settings(JOBHOOK_SIMULATOR=value).simulator.enabled is expected


@pytest.mark.parametrize("value", ["maybe", "2", "-1", "y", "n", "enabled", "truee", "t"])
def test_bad_booleans(value: str) -> None:
    assert_names(error_for(JOBHOOK_SIMULATOR=value), "JOBHOOK_SIMULATOR")


def test_the_postgresql_fast_path_is_on_unless_turned_off() -> None:
    assert settings().postgresql_fast_path is True
    assert settings(JOBHOOK_POSTGRESQL_FAST_PATH="false").postgresql_fast_path is False
    assert_names(error_for(JOBHOOK_POSTGRESQL_FAST_PATH="sometimes"), "JOBHOOK_POSTGRESQL_FAST_PATH")


RATE_VARIABLES = ["JOBHOOK_SIMULATOR_FAILURE_RATE", "JOBHOOK_SIMULATOR_DROP_RATE", "JOBHOOK_SIMULATOR_DUPLICATE_RATE"]


@pytest.mark.parametrize("variable", RATE_VARIABLES)
@pytest.mark.parametrize("value", ["-0.01", "1.01", "2", "-1", "nan", "inf", "-inf", "abc", "50%", "1/2"])
def test_rates_outside_unit_interval(variable: str, value: str) -> None:
    assert_names(error_for(**{variable: value}), variable)


@pytest.mark.parametrize("variable", RATE_VARIABLES)
@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("1", 1.0), ("0.5", 0.5), ("1.0", 1.0), ("0.0", 0.0)])
def test_rates_inside_unit_interval(variable: str, value: str, expected: float) -> None:
    sim = settings(**{variable: value}).simulator
    got = {
        "JOBHOOK_SIMULATOR_FAILURE_RATE": sim.failure_rate,
        "JOBHOOK_SIMULATOR_DROP_RATE": sim.drop_rate,
        "JOBHOOK_SIMULATOR_DUPLICATE_RATE": sim.duplicate_rate,
    }[variable]
    assert got == expected


def test_the_simulator_of_another_replica() -> None:
    assert settings().simulator.base_url is None  # this process's own
    shared = settings(JOBHOOK_SIMULATOR_BASE_URL="http://jobhook-1:8000/simulator/").simulator
    assert shared.base_url == "http://jobhook-1:8000/simulator"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOBHOOK_POLL_CONCURRENCY", "0"),
        ("JOBHOOK_POLL_CONCURRENCY", "-1"),
        ("JOBHOOK_POLL_CONCURRENCY", "1.5"),
        ("JOBHOOK_POLL_CONCURRENCY", "many"),
        ("JOBHOOK_SIMULATOR_SEED", "-1"),
        ("JOBHOOK_SIMULATOR_SEED", "x"),
        ("JOBHOOK_SIMULATOR_SEED", "1e3"),
        ("JOBHOOK_SIMULATOR_BASE_URL", "replica-1:8000/simulator"),
        ("JOBHOOK_SIMULATOR_BASE_URL", "ftp://replica-1/simulator"),
        ("JOBHOOK_LOG_FORMAT", "xml"),
        ("JOBHOOK_LOG_FORMAT", "texts"),
        ("JOBHOOK_SQLITE_SYNCHRONOUS", "OFF"),
        ("JOBHOOK_SQLITE_SYNCHRONOUS", "fast"),
    ],
)
def test_other_bad_values(variable: str, value: str) -> None:
    assert_names(error_for(**{variable: value}), variable)


# -- comma lists ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["JOBHOOK_SECRET", "JOBHOOK_API_TOKENS"])
@pytest.mark.parametrize("value", ["a,,b", "a,", ",a", "a, ,b", " , ", ","])
def test_comma_lists_with_empty_entries(variable: str, value: str) -> None:
    assert_names(error_for(**{variable: value}), variable)


@pytest.mark.parametrize("value", ["0,,3m", "0,", "0,x", "0,-1", "abc"])
def test_simulator_retry_schedule_errors(value: str) -> None:
    assert_names(error_for(JOBHOOK_SIMULATOR_CALLBACK_RETRIES=value), "JOBHOOK_SIMULATOR_CALLBACK_RETRIES")


def test_mirror_allow_networks_are_unset_by_default_and_parsed_in_order() -> None:
    assert settings().mirror_allow_networks == ()
    parsed = settings(JOBHOOK_MIRROR_ALLOW_NETWORKS=" 127.0.0.0/8, fd00::/8 ,10.1.2.3").mirror_allow_networks
    assert [str(network) for network in parsed] == ["127.0.0.0/8", "fd00::/8", "10.1.2.3/32"]


@pytest.mark.parametrize("value", ["127.0.0.0/33", "localhost", "10.0.0.1/8", "127.0.0.0/8,,::1", "10.0.0.0/8;"])
def test_a_malformed_mirror_allow_network_stops_with_one_line(value: str) -> None:
    error = error_for(JOBHOOK_MIRROR_ALLOW_NETWORKS=value)
    assert_names(error, "JOBHOOK_MIRROR_ALLOW_NETWORKS")
    assert "networks such as 10.0.0.0/8" in error.message


def test_secret_list_keeps_order() -> None:
    assert settings(JOBHOOK_SECRET=" b , a ,c").secrets == ("b", "a", "c")


def test_config_error_is_a_jobhook_error() -> None:
    error = error_for(JOBHOOK_POLL_INTERVAL="x")
    assert isinstance(error, JobhookError)
    assert error.message and error.message in str(error)


# -- env file ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "jobhook.env") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_env_file_syntax(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "PLAIN=value\n"
        "export EXPORTED=1\n"
        "export   SPACED = two words  \n"
        'DOUBLE="quoted # not a comment"\n'
        "SINGLE='single'\n"
        "EMPTY=\n"
        'EMPTY_QUOTES=""\n'
        "EQUALS=a=b=c\n"
        "MISMATCHED='half\"\n"
        "LONE='\n"
        "URL=https://hooks.example.com/x?y=1\n"
        "lower_case=ok\n"
        "PLAIN=second wins\n"
        "\tTABBED=\ttab\t\n",
    )
    assert read_env_file(path) == {
        "PLAIN": "second wins",
        "EXPORTED": "1",
        "SPACED": "two words",
        "DOUBLE": "quoted # not a comment",
        "SINGLE": "single",
        "EMPTY": "",
        "EMPTY_QUOTES": "",
        "EQUALS": "a=b=c",
        "MISMATCHED": "'half\"",
        "LONE": "'",
        "URL": "https://hooks.example.com/x?y=1",
        "lower_case": "ok",
        "TABBED": "tab",
    }


def test_env_file_crlf(tmp_path: Path) -> None:
    path = tmp_path / "crlf.env"
    path.write_bytes(b"A=1\r\nB='2'\r\n")
    assert read_env_file(str(path)) == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nnot a pair\n", 2),
        ("A=1\n\n# c\n=value\n", 4),
        ("1A=x\n", 1),
        ("A B=x\n", 1),
        ("A-B=x\n", 1),
        ("export\n", 1),
        ("export =x\n", 1),
        ("A=1\nB=2\nC=3\nJUST_A_KEY\n", 4),
    ],
)
def test_env_file_bad_line_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_env_file(path)
    assert caught.value.variable == "--env-file"
    assert f"{path}:{line}:" in str(caught.value)
    with pytest.raises(ConfigError):
        Settings.from_environ({}, env_file=path)


def test_env_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.env")
    with pytest.raises(ConfigError) as caught:
        read_env_file(path)
    assert caught.value.variable == "--env-file"
    assert path in str(caught.value)


def test_env_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_env_file(str(tmp_path))
    assert caught.value.variable == "--env-file"


def test_env_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.env"
    path.write_bytes("JOBHOOK_EMAIL_FROM=Zoë <z@example.com>\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        read_env_file(str(path))
    assert caught.value.variable == "--env-file"


def test_env_file_feeds_settings_and_environment_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "JOBHOOK_POLL_INTERVAL=7\nJOBHOOK_JOB_TIMEOUT=10m\nexport JOBHOOK_PUBLIC_URL='https://from-file.example'\n",
    )
    s = Settings.from_environ({"JOBHOOK_POLL_INTERVAL": "3"}, env_file=path)
    assert s.poll_interval == 3.0  # the environment wins
    assert s.job_timeout == 600.0  # the file fills in
    assert s.public_url == "https://from-file.example"
    assert Settings.from_environ({}, env_file=path).poll_interval == 7.0


def test_env_file_values_are_checked_like_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "JOBHOOK_POLL_INTERVAL=soon\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({}, env_file=path)
    assert caught.value.variable == "JOBHOOK_POLL_INTERVAL"


def test_environment_value_rescues_a_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "JOBHOOK_POLL_INTERVAL=soon\n")
    assert Settings.from_environ({"JOBHOOK_POLL_INTERVAL": "4"}, env_file=path).poll_interval == 4.0


# -- Secret -----------------------------------------------------------------------------------------


def test_secret_repr_masks_the_value() -> None:
    secret = Secret("sk-very-secret-value")
    assert "sk-very-secret-value" not in repr(secret)
    assert "very" not in repr(secret)
    assert f"{secret!r}" == repr(secret)
    assert secret == "sk-very-secret-value"  # still usable as the string it is
    assert str(secret) == "sk-very-secret-value"


def test_settings_repr_shows_no_secret() -> None:
    s = settings(
        JOBHOOK_SECRET="signing-key-1,signing-key-2",
        JOBHOOK_API_TOKENS="bearer-token-xyz",
        JOBHOOK_AIVIDEOAPI_API_KEY="sk-live-123456",
        JOBHOOK_SEGMIND_API_KEY="sg-abcdef",
    )
    text = repr(s) + repr(s.providers) + str(s.secrets) + repr(s.api_tokens)
    for value in ("signing-key-1", "signing-key-2", "bearer-token-xyz", "sk-live-123456", "sg-abcdef"):
        assert value not in text


# -- JOBHOOK_DATABASE: which engine ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("jobhook.db", Path("jobhook.db")),
        ("/var/lib/jobhook/j.db", Path("/var/lib/jobhook/j.db")),
        ("sqlite:///relative.db", Path("relative.db")),
        ("sqlite:////var/lib/jobhook/j.db", Path("/var/lib/jobhook/j.db")),
    ],
)
def test_a_path_or_a_sqlite_url_keeps_sqlite(raw: str, path: Path) -> None:
    chosen = settings(JOBHOOK_DATABASE=raw)
    assert chosen.database == path
    assert chosen.database_url is None


@pytest.mark.parametrize(
    "raw", ["postgresql://jobhook:s3cret@db.internal:5432/jobhook", "postgres://db/jobhook", "postgresql:///jobhook"]
)
def test_a_postgresql_url_selects_postgresql_and_is_kept_secret(raw: str) -> None:
    chosen = settings(JOBHOOK_DATABASE=raw)
    assert chosen.database_url == raw
    assert "s3cret" not in repr(chosen)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("mysql://db/jobhook", "scheme 'mysql'"),
        ("sqlite://", "sqlite:///path"),
        ("sqlite://relative.db", "sqlite:///path"),
        ("postgresql://db:notaport/jobhook", "not a valid PostgreSQL URL"),
        ("postgresql://", "postgresql://user:password@host:5432/database"),
    ],
)
def test_a_database_url_that_is_wrong_names_the_variable(raw: str, says: str) -> None:
    error = error_for(JOBHOOK_DATABASE=raw)
    assert_names(error, "JOBHOOK_DATABASE")
    assert says in str(error)


# -- secrets are named, never echoed (issue 14, item 7) ---------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "extra"),
    [
        # a Slack webhook's path is the credential: however it is malformed, none of it is printed
        ("JOBHOOK_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/s3cretpath", {}),
        ("JOBHOOK_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/s3cret path", {}),
        ("JOBHOOK_SLACK_WEBHOOK_URL", "https://hooks.slack.com:s3cret/services", {}),
        ("JOBHOOK_FORWARD_URL", "ftp://hooks.example/s3cret-token", {"JOBHOOK_FORWARD_SECRET": "whsec_" + "A" * 40}),
        # a base URL's user info and query values
        ("JOBHOOK_AIVIDEOAPI_BASE_URL", "ftp://user:s3cret@api.example", {}),
        ("JOBHOOK_APIFRAME_BASE_URL", "https://user:s3cret@api example", {}),
        ("JOBHOOK_SEGMIND_BASE_URL", "https://user:pa/s3cret@api.example", {}),
        ("JOBHOOK_APIINONE_BASE_URL", "https://api.example:x/?key=s3cret&b=1", {}),
        ("JOBHOOK_PUBLIC_URL", "https://user:s3cret@:8000", {}),
        ("JOBHOOK_SIMULATOR_BASE_URL", "replica-1:s3cret@host:8000", {}),
        # a PostgreSQL password with an unescaped `/` is read by urllib as the port
        ("JOBHOOK_DATABASE", "postgresql://jobhook:ab/s3cret@db:5432/jobhook", {}),
        ("JOBHOOK_DATABASE", "sqlite://user:s3cret@x", {}),
    ],
)
def test_a_wrong_secret_setting_is_named_and_not_shown(variable: str, value: str, extra: dict[str, str]) -> None:
    error = error_for(**{variable: value, **extra})
    assert_names(error, variable)
    assert "s3cret" not in str(error)


def test_a_wrong_base_url_is_shown_with_its_user_info_masked() -> None:
    error = error_for(JOBHOOK_AIVIDEOAPI_BASE_URL="ftp://user:s3cret@api.example/v1?key=s3cret")
    assert "'ftp://***@api.example/v1?key=***'" in str(error)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example", "https://api.example"),
        ("https://api.example:8443/v1", "https://api.example:8443/v1"),
        ("https://user:pass@api.example/v1", "https://***@api.example/v1"),
        ("https://sk-key@api.example", "https://***@api.example"),
        ("https://u:p@ss@api.example", "https://***@api.example"),  # an unescaped @ in the password
        ("https://api.example/v1?key=abc&mode=x#top", "https://api.example/v1?key=***&mode=***#top"),
        ("https://api.example/v1?flag", "https://api.example/v1?flag"),
    ],
)
def test_shown_url(url: str, shown: str) -> None:
    assert shown_url(url) == shown


@pytest.mark.parametrize("value", ["auto", "AUTO", " Auto "])
def test_the_simulator_setting_takes_auto(value: str) -> None:
    assert settings(JOBHOOK_SIMULATOR=value).simulator.enabled is None


def test_a_wrong_simulator_setting_lists_auto() -> None:
    error = error_for(JOBHOOK_SIMULATOR="sometimes")
    assert_names(error, "JOBHOOK_SIMULATOR")
    assert "auto, true or false" in str(error)


def test_shown_url_without_a_scheme() -> None:
    assert shown_url("user:pass@host:8000/x") == "***@host:8000/x"


# -- misspelt settings are warned about (issue 14, item 12) -----------------------------------------


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        (
            "JOBHOOK_POLL_INTERVALL",
            "unknown setting JOBHOOK_POLL_INTERVALL is ignored; did you mean JOBHOOK_POLL_INTERVAL?",
        ),
        (
            "jobhook_poll_interval",
            "unknown setting jobhook_poll_interval is ignored; did you mean JOBHOOK_POLL_INTERVAL?",
        ),
        ("JOBHOOK_AIVIDEOAPI_APIKEY", "did you mean JOBHOOK_AIVIDEOAPI_API_KEY?"),
        ("JOBHOOK_SEGMIND_BASEURL", "did you mean JOBHOOK_SEGMIND_BASE_URL?"),
        ("JOBHOOK_API_TOKEN", "did you mean JOBHOOK_API_TOKENS?"),
        ("JOBHOOK_SIMULATOR_LATENCE", "did you mean JOBHOOK_SIMULATOR_LATENCY?"),
        # A misspelt cap must not pass silently: it would not be enforced.
        ("JOBHOOK_BUDGET_USD_PER_DAYS", "did you mean JOBHOOK_BUDGET_USD_PER_DAY?"),
        ("JOBHOOK_APIFRAME_BUDGET_PER_DAY", "did you mean JOBHOOK_APIFRAME_BUDGET_USD_PER_DAY?"),
        ("JOBHOOK_FOO", "unknown setting JOBHOOK_FOO is ignored"),
    ],
)
def test_an_unknown_setting_is_warned_about_with_the_closest_name(name: str, warning: str) -> None:
    [line] = setting_warnings({name: "1", "JOBHOOK_POLL_INTERVAL": "2", "PATH": "/bin"})
    assert line.endswith(warning), line
    if "did you mean" not in warning:
        assert "did you mean" not in line


def test_known_settings_and_others_are_not_warned_about() -> None:
    env = {name: "x" for name in known_setting_names()}
    env.update(
        {
            "JOBHOOK_MIRROR_ALLOW_NETWORKS": "127.0.0.0/8",
            "JOBHOOK_URL": "http://127.0.0.1:8000",  # the API clients' own
            "JOBHOOK_DOMAIN": "hooks.example.com",  # deploy/'s, in the same env file
            "JOBHOOK_TEST_ENGINES": "sqlite",  # the test suite's
            "JOBHOOK_CRASH_SEED": "1",
            "HOME": "/root",
            "POLL_INTERVALL": "1",  # not ours
        }
    )
    assert setting_warnings(env) == []


def test_every_setting_read_is_a_known_name() -> None:
    """A setting read in config.py but missing from the list would be warned about as unknown."""
    import re

    source = Path(__file__).parents[2].joinpath("service", "config.py").read_text()
    read = set(re.findall(r'"(JOBHOOK_[A-Z_]+)"', source)) - {"JOBHOOK_TEST_", "JOBHOOK_CRASH_"}
    read |= {f"JOBHOOK_{name.upper()}_{suffix}" for name in PROVIDER_NAMES for suffix in ("API_KEY", "BASE_URL")}
    assert read <= set(known_setting_names())


# -- JOBHOOK_<P>_PRICES (SPEC §8) ----------------------------------------------------------------------


def test_prices_are_unset_by_default() -> None:
    assert all(provider.prices is None for provider in settings().providers.values())


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_each_provider_takes_prices(provider: str) -> None:
    name = f"JOBHOOK_{provider.upper()}_PRICES"
    assert settings(**{name: "TURBO=0.03,BALANCED=0.06,QUALITY=0.10"}).providers[provider].prices == {
        "TURBO": 0.03,
        "BALANCED": 0.06,
        "QUALITY": 0.10,
    }
    assert settings(**{name: "0.12"}).providers[provider].prices == {"TURBO": 0.12, "BALANCED": 0.12, "QUALITY": 0.12}
    assert settings(**{name: "  "}).providers[provider].prices is None  # empty: as if unset


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("twelve cents", "or one price for every tier such as 0.12, got 'twelve cents'"),
        ("TURBO=0.03,FAST=0.01", "got 'FAST=0.01'"),
        ("TURBO=-1", "TURBO must be from 0 to 100 US dollars per image, got '-1'"),
        ("BALANCED=0.06,balanced=0.07", "BALANCED is priced twice"),
    ],
)
def test_wrong_prices_stop_with_one_line_naming_the_variable(value: str, message: str) -> None:
    error = error_for(JOBHOOK_APIFRAME_PRICES=value)
    assert_names(error, "JOBHOOK_APIFRAME_PRICES")
    assert message in error.message


def test_prices_settings_are_known() -> None:
    env = {f"JOBHOOK_{provider.upper()}_PRICES": "0.1" for provider in PROVIDER_NAMES}
    assert setting_warnings(env) == []
    [line] = setting_warnings({"JOBHOOK_APIFRAME_PRICE": "0.1"})
    assert line.endswith("did you mean JOBHOOK_APIFRAME_PRICES?")


# -- JOBHOOK_BUDGET_USD_PER_DAY, JOBHOOK_<P>_BUDGET_USD_PER_DAY (SPEC §9) -----------------------------------


def test_no_budget_by_default() -> None:
    assert not settings().budget
    assert settings().budget.scopes("aivideoapi") == ()


@pytest.mark.parametrize("provider", [*PROVIDER_NAMES, "simulator"])
def test_the_total_and_each_provider_take_a_daily_cap(provider: str) -> None:
    caps = settings(
        JOBHOOK_BUDGET_USD_PER_DAY="25", **{f"JOBHOOK_{provider.upper()}_BUDGET_USD_PER_DAY": "0.50"}
    ).budget
    assert caps.total == 25_000_000
    assert dict(caps.providers) == {provider: 500_000}
    assert caps.scopes(provider) == (("total", 25_000_000), (provider, 500_000))
    assert settings(JOBHOOK_BUDGET_USD_PER_DAY=" ").budget.total is None  # empty: as if unset
    assert settings(JOBHOOK_BUDGET_USD_PER_DAY="0").budget.total == 0  # nothing that costs is sent


@pytest.mark.parametrize("variable", ["JOBHOOK_BUDGET_USD_PER_DAY", "JOBHOOK_SEGMIND_BUDGET_USD_PER_DAY",
                                      "JOBHOOK_SIMULATOR_BUDGET_USD_PER_DAY"])  # fmt: skip
@pytest.mark.parametrize("value", ["ten", "-1", "nan", "2e6"])
def test_a_wrong_cap_stops_with_one_line_naming_the_variable(variable: str, value: str) -> None:
    error = error_for(**{variable: value})
    assert_names(error, variable)
    assert "expected US dollars per UTC day" in error.message


def test_the_simulator_takes_prices_to_try_budgets_with() -> None:
    assert settings().simulator.prices is None
    assert settings(JOBHOOK_SIMULATOR_PRICES="0.25").simulator.prices == dict.fromkeys(
        ("TURBO", "BALANCED", "QUALITY"), 0.25
    )
    assert_names(error_for(JOBHOOK_SIMULATOR_PRICES="cheap"), "JOBHOOK_SIMULATOR_PRICES")


def test_budget_settings_are_known() -> None:
    env = {f"JOBHOOK_{provider.upper()}_BUDGET_USD_PER_DAY": "1" for provider in PROVIDER_NAMES}
    env.update(JOBHOOK_BUDGET_USD_PER_DAY="1", JOBHOOK_SIMULATOR_BUDGET_USD_PER_DAY="1", JOBHOOK_SIMULATOR_PRICES="0.1")
    assert setting_warnings(env) == []
