"""SPEC §3's request vocabulary: `parse_submission` (types, presence) and `check` (provider capabilities)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.domain.request import (
    GENERATION_FIELDS,
    MAX_OBJECT_BYTES,
    RENDERING_SPEEDS,
    TOP_LEVEL_FIELDS,
    Capabilities,
    GenerationRequest,
    RequestError,
    Submission,
    check,
    parse_submission,
    reserved_option,
)
from service.errors import JobhookError
from service.providers.aivideoapi import CAPABILITIES as AIVIDEOAPI

FULL_BODY: dict[str, Any] = {
    "provider": "aivideoapi",
    "prompt": 'A poster reading "SUMMER NIGHTS"',
    "aspect_ratio": "16:9",
    "rendering_speed": "TURBO",
    "output_format": "png",
    "seed": 42,
    "negative_prompt": "blurry",
    "style_type": "DESIGN",
    "magic_prompt": False,
    "num_images": 2,
    "reference_image_url": "https://images.example/ref.png",
    "metadata": {"order": 1234},
    "provider_options": {"extra": True},
    "submit": False,
}

EVERYTHING = Capabilities(
    prompt_max_chars=100,
    aspect_ratios=("1:1", "16:9"),
    rendering_speeds=("TURBO", "QUALITY"),
    output_formats=("png", "webp"),
    seed_range=(0, 1000),
    negative_prompt=True,
    style_types=("AUTO", "DESIGN"),
    magic_prompt=True,
    num_images_range=(1, 4),
    reference_image=True,
)


def minimal(**fields: Any) -> dict[str, Any]:
    return {"provider": "aivideoapi", "prompt": "a cat", **fields}


def refused(body: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_submission(body)
    return caught.value


# -- parse_submission -------------------------------------------------------------------------------


def test_minimal_body() -> None:
    submission = parse_submission(minimal())
    assert submission == Submission(
        provider="aivideoapi", request=GenerationRequest(prompt="a cat"), metadata=None, submit=True
    )


def test_full_body() -> None:
    submission = parse_submission(dict(FULL_BODY))
    assert submission.provider == "aivideoapi"
    assert submission.metadata == {"order": 1234}
    assert submission.submit is False
    assert submission.request == GenerationRequest(
        prompt='A poster reading "SUMMER NIGHTS"',
        aspect_ratio="16:9",
        rendering_speed="TURBO",
        output_format="png",
        seed=42,
        negative_prompt="blurry",
        style_type="DESIGN",
        magic_prompt=False,
        num_images=2,
        reference_image_url="https://images.example/ref.png",
        provider_options={"extra": True},
    )


def test_nulls_mean_not_set() -> None:
    body = {field: None for field in TOP_LEVEL_FIELDS if field not in ("provider", "prompt", "submit")}
    submission = parse_submission(minimal(**body))
    assert submission.request == GenerationRequest(prompt="a cat")
    assert submission.metadata is None


@pytest.mark.parametrize("body", [None, [], "text", 42, True, [minimal()]])
def test_body_must_be_an_object(body: Any) -> None:
    error = refused(body)
    assert (error.field, error.code) == ("body", "invalid_body")


def test_request_error_is_a_jobhook_error() -> None:
    assert isinstance(refused(None), JobhookError)


@pytest.mark.parametrize("field", ["provider", "prompt"])
@pytest.mark.parametrize(
    ("value", "code"),
    [
        (..., "missing_field"),
        (None, "missing_field"),
        ("", "invalid_field"),
        ("   ", "invalid_field"),
        ("\n\t", "invalid_field"),
        (42, "invalid_field"),
        (True, "invalid_field"),
        ([1], "invalid_field"),  # a list: of provider names only (SPEC §8)
        ({"a": 1}, "invalid_field"),
    ],
)
def test_required_strings(field: str, value: Any, code: str) -> None:
    body = minimal()
    if value is ...:
        del body[field]
    else:
        body[field] = value
    error = refused(body)
    assert (error.field, error.code) == (field, code)
    assert field in error.message


# (field, a value of the wrong type)
WRONG_TYPES: list[tuple[str, Any]] = [
    ("aspect_ratio", 16),
    ("aspect_ratio", ["16:9"]),
    ("rendering_speed", 1),
    ("rendering_speed", True),
    ("output_format", {"png": True}),
    ("seed", "42"),
    ("seed", 4.2),
    ("seed", 42.0),
    ("seed", True),  # bool is an int in Python, but not a seed
    ("seed", False),
    ("seed", [42]),
    ("negative_prompt", 0),
    ("negative_prompt", ["x"]),
    ("style_type", 3),
    ("magic_prompt", 1),
    ("magic_prompt", 0),
    ("magic_prompt", "true"),
    ("magic_prompt", "false"),
    ("num_images", "2"),
    ("num_images", 2.0),
    ("num_images", True),  # bool-is-not-int
    ("num_images", False),
    ("reference_image_url", 5),
    ("reference_image_url", {"url": "https://x"}),
    ("submit", "false"),
    ("submit", 0),
    ("submit", 1),
    ("metadata", [1, 2]),
    ("metadata", "order=1"),
    ("metadata", 5),
    ("metadata", True),
    ("provider_options", []),
    ("provider_options", "x"),
    ("provider_options", 1),
    ("provider_options", True),
    ("max_price_usd", "0.10"),
    ("max_price_usd", True),  # bool-is-not-int
    ("max_price_usd", 0),  # a cap of nothing would leave out every provider but the simulator
    ("max_price_usd", 0.0),
    ("max_price_usd", -0.1),
    ("max_price_usd", 10**400),  # beyond any float
    ("max_price_usd", [0.1]),
    ("max_price_usd", {"usd": 0.1}),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_wrong_types(field: str, value: Any) -> None:
    error = refused(minimal(**{field: value}))
    assert (error.field, error.code) == (field, "invalid_field")
    assert field in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 0), ("seed", -1), ("seed", 2**40), ("num_images", 0), ("num_images", 8), ("magic_prompt", True)],
)
def test_right_types_pass_parsing(field: str, value: Any) -> None:
    """Ranges are the provider's business (`check`), not the parser's."""
    submission = parse_submission(minimal(**{field: value}))
    assert getattr(submission.request, field) == value
    assert type(getattr(submission.request, field)) is type(value)


@pytest.mark.parametrize("field", ["model", "callback_url", "Prompt", "images", "", "input"])
def test_unknown_top_level_field(field: str) -> None:
    error = refused(minimal(**{field: "x"}))
    assert (error.field, error.code) == (field, "unknown_field")
    assert error.accepted == list(TOP_LEVEL_FIELDS)


def test_unknown_fields_reported_in_a_stable_order() -> None:
    error = refused(minimal(zzz=1, aaa=2, mmm=3))
    assert error.field == "aaa"


def test_unknown_field_is_reported_before_missing_ones() -> None:
    error = refused({"bogus": 1})
    assert (error.field, error.code) == ("bogus", "unknown_field")


@pytest.mark.parametrize("field", ["metadata", "provider_options"])
def test_cap_is_exact_in_bytes_of_compact_json(field: str) -> None:
    at_cap = {"k": "x" * (MAX_OBJECT_BYTES - len('{"k":""}'))}
    assert len(json.dumps(at_cap, separators=(",", ":"))) == MAX_OBJECT_BYTES
    parse_submission(minimal(**{field: at_cap}))
    over = {"k": at_cap["k"] + "x"}
    assert refused(minimal(**{field: over})).field == field


def test_metadata_within_cap() -> None:
    metadata = {"note": "x" * (MAX_OBJECT_BYTES - 1000), "order": 1}
    assert parse_submission(minimal(metadata=metadata)).metadata == metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {"note": "x" * (MAX_OBJECT_BYTES + 1)},
        {"note": "x" * MAX_OBJECT_BYTES},
        {f"k{i}": i for i in range(MAX_OBJECT_BYTES // 4)},
        {"list": list(range(MAX_OBJECT_BYTES))},
    ],
    ids=["one-long-string", "string-of-the-cap", "many-keys", "long-list"],
)
def test_metadata_over_cap(metadata: dict[str, Any]) -> None:
    assert len(json.dumps(metadata, separators=(",", ":"))) > MAX_OBJECT_BYTES
    error = refused(minimal(metadata=metadata))
    assert (error.field, error.code) == ("metadata", "invalid_field")
    assert str(MAX_OBJECT_BYTES) in error.message


def test_metadata_non_ascii_counts_as_more_than_one_character() -> None:
    metadata = {"note": "é" * (MAX_OBJECT_BYTES // 2 + 10)}  # ≥ 2 bytes each in any encoding
    assert refused(minimal(metadata=metadata)).field == "metadata"


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [300, 1000])
def test_deeply_nested_metadata_is_refused(depth: int) -> None:
    """Nesting orjson cannot serialise (the store, the request fingerprint) is a 422, never a 500."""
    error = refused(minimal(metadata={"a": _nested(depth)}))
    assert (error.field, error.code) == ("metadata", "invalid_field")


@pytest.mark.parametrize("depth", [300, 1000])
def test_deeply_nested_provider_options_are_refused(depth: int) -> None:
    error = refused(minimal(provider_options={"a": _nested(depth)}))
    assert (error.field, error.code) == ("provider_options", "invalid_field")


@pytest.mark.parametrize("field", ["metadata", "provider_options"])
def test_moderately_nested_objects_pass(field: str) -> None:
    value = {"a": _nested(100)}
    submission = parse_submission(minimal(**{field: value}))
    assert (submission.metadata if field == "metadata" else submission.request.provider_options) == value


def test_provider_options_within_cap() -> None:
    options = {"note": "x" * (MAX_OBJECT_BYTES - 1000)}
    assert parse_submission(minimal(provider_options=options)).request.provider_options == options


def test_provider_options_over_cap() -> None:
    error = refused(minimal(provider_options={"note": "x" * MAX_OBJECT_BYTES}))
    assert (error.field, error.code) == ("provider_options", "invalid_field")
    assert str(MAX_OBJECT_BYTES) in error.message


def test_empty_metadata_is_kept() -> None:
    assert parse_submission(minimal(metadata={})).metadata == {}


@pytest.mark.parametrize(
    "url",
    ["https://images.example/a.png", "http://images.example/a.png", "https://images.example:8443/a?x=1"],
)
def test_reference_image_url_http_s(url: str) -> None:
    assert parse_submission(minimal(reference_image_url=url)).request.reference_image_url == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://images.example/a.png",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "images.example/a.png",
        "//images.example/a.png",
        "",
        " https://images.example/a.png",
        "httpx://images.example/a.png",
    ],
)
def test_reference_image_url_other_schemes(url: str) -> None:
    error = refused(minimal(reference_image_url=url))
    assert (error.field, error.code) == ("reference_image_url", "invalid_field")


def test_provider_options_null_is_empty() -> None:
    assert parse_submission(minimal(provider_options=None)).request.provider_options == {}


@pytest.mark.parametrize("submit", [True, False])
def test_submit_flag(submit: bool) -> None:
    assert parse_submission(minimal(submit=submit)).submit is submit


# -- check ------------------------------------------------------------------------------------------


def checked(caps: Capabilities, **fields: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        check(GenerationRequest(prompt=fields.pop("prompt", "a cat"), **fields), caps, "prov")
    return caught.value


def test_aivideoapi_capabilities_are_the_documented_ones() -> None:
    assert AIVIDEOAPI.prompt_max_chars == 5000
    assert AIVIDEOAPI.aspect_ratios is not None
    assert set(AIVIDEOAPI.aspect_ratios) == {"1:1", "3:4", "9:16", "4:3", "16:9"}
    assert AIVIDEOAPI.rendering_speeds is not None
    assert set(AIVIDEOAPI.rendering_speeds) == {"TURBO", "BALANCED", "QUALITY"}
    assert AIVIDEOAPI.output_formats is not None
    assert set(AIVIDEOAPI.output_formats) == {"jpeg", "png"}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"prompt": "x" * 5000},
        {"aspect_ratio": "16:9", "rendering_speed": "TURBO", "output_format": "png"},
        {"aspect_ratio": "1:1", "rendering_speed": "QUALITY", "output_format": "jpeg"},
        {"aspect_ratio": "9:16", "rendering_speed": "BALANCED"},
        {"num_images": 1},
        {"provider_options": {"anything": [1, 2]}},
    ],
)
def test_aivideoapi_accepts(fields: dict[str, Any]) -> None:
    prompt = fields.pop("prompt", "a cat")
    check(GenerationRequest(prompt=prompt, **fields), AIVIDEOAPI, "aivideoapi")


# (field, value, code, accepted)
AIVIDEOAPI_REFUSALS: list[tuple[str, Any, str, list[Any] | None]] = [
    ("prompt", "x" * 5001, "unsupported_value", None),
    ("aspect_ratio", "2:1", "unsupported_value", ["1:1", "3:4", "9:16", "4:3", "16:9"]),
    ("aspect_ratio", "16x9", "unsupported_value", ["1:1", "3:4", "9:16", "4:3", "16:9"]),
    ("aspect_ratio", "", "unsupported_value", ["1:1", "3:4", "9:16", "4:3", "16:9"]),
    ("rendering_speed", "turbo", "unsupported_value", list(RENDERING_SPEEDS)),
    ("rendering_speed", "FAST", "unsupported_value", list(RENDERING_SPEEDS)),
    ("output_format", "webp", "unsupported_value", ["jpeg", "png"]),
    ("output_format", "PNG", "unsupported_value", ["jpeg", "png"]),
    ("output_format", "jpg", "unsupported_value", ["jpeg", "png"]),
    ("seed", 42, "unsupported_field", None),
    ("seed", 0, "unsupported_field", None),
    ("negative_prompt", "blurry", "unsupported_field", None),
    ("negative_prompt", "", "unsupported_field", None),
    ("style_type", "DESIGN", "unsupported_field", None),
    ("magic_prompt", True, "unsupported_field", None),
    ("magic_prompt", False, "unsupported_field", None),
    ("reference_image_url", "https://images.example/a.png", "unsupported_field", None),
    ("num_images", 2, "unsupported_value", [1]),
    ("num_images", 0, "unsupported_value", [1]),
    ("num_images", -1, "unsupported_value", [1]),
]


@pytest.mark.parametrize(("field", "value", "code", "accepted"), AIVIDEOAPI_REFUSALS)
def test_aivideoapi_refuses(field: str, value: Any, code: str, accepted: list[Any] | None) -> None:
    error = checked(AIVIDEOAPI, **{field: value})
    assert (error.field, error.code, error.accepted) == (field, code, accepted)
    assert field in error.message
    assert "prov" in error.message  # names the provider


def test_prompt_limit_is_in_the_message() -> None:
    assert "5000" in checked(AIVIDEOAPI, prompt="x" * 6000).message


def test_prompt_limit_counts_characters_not_bytes() -> None:
    check(GenerationRequest(prompt="é" * 5000), AIVIDEOAPI, "aivideoapi")
    assert checked(AIVIDEOAPI, prompt="é" * 5001).field == "prompt"


def test_nothing_at_all_is_supported() -> None:
    caps = Capabilities(rendering_speeds=None)
    check(GenerationRequest(prompt="x" * 100_000), caps, "bare")  # no prompt limit declared
    for field, value in [
        ("aspect_ratio", "1:1"),
        ("rendering_speed", "TURBO"),
        ("output_format", "png"),
        ("style_type", "AUTO"),
    ]:
        error = checked(caps, **{field: value})
        assert (error.field, error.code, error.accepted) == (field, "unsupported_field", None)


def test_everything_on_accepts_a_full_request() -> None:
    check(
        GenerationRequest(
            prompt="x" * 100,
            aspect_ratio="16:9",
            rendering_speed="QUALITY",
            output_format="webp",
            seed=1000,
            negative_prompt="blurry",
            style_type="AUTO",
            magic_prompt=True,
            num_images=4,
            reference_image_url="https://images.example/a.png",
        ),
        EVERYTHING,
        "prov",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 0), ("seed", 1000), ("seed", 500), ("num_images", 1), ("num_images", 4), ("magic_prompt", False)],
)
def test_everything_on_range_ends(field: str, value: Any) -> None:
    check(GenerationRequest(prompt="p", **{field: value}), EVERYTHING, "prov")


EVERYTHING_REFUSALS: list[tuple[str, Any, list[Any] | None]] = [
    ("prompt", "x" * 101, None),
    ("aspect_ratio", "4:3", ["1:1", "16:9"]),
    ("rendering_speed", "BALANCED", ["TURBO", "QUALITY"]),
    ("output_format", "jpeg", ["png", "webp"]),
    ("style_type", "REALISTIC", ["AUTO", "DESIGN"]),
    ("seed", -1, [0, 1000]),
    ("seed", 1001, [0, 1000]),
    ("seed", 2**63, [0, 1000]),
    ("num_images", 0, [1, 2, 3, 4]),
    ("num_images", 5, [1, 2, 3, 4]),
]


@pytest.mark.parametrize(("field", "value", "accepted"), EVERYTHING_REFUSALS)
def test_everything_on_out_of_range(field: str, value: Any, accepted: list[Any] | None) -> None:
    error = checked(EVERYTHING, **{field: value})
    assert (error.field, error.code, error.accepted) == (field, "unsupported_value", accepted)


def test_check_reports_the_first_bad_field_in_a_stable_order() -> None:
    error = checked(AIVIDEOAPI, aspect_ratio="2:1", seed=1, num_images=3)
    assert error.field == "aspect_ratio"
    error = checked(AIVIDEOAPI, seed=1, num_images=3)
    assert error.field == "seed"


def test_parse_then_check_full_body_against_aivideoapi_names_a_field() -> None:
    submission = parse_submission(dict(FULL_BODY))
    with pytest.raises(RequestError) as caught:
        check(submission.request, AIVIDEOAPI, "aivideoapi")
    assert caught.value.code == "unsupported_field"
    assert caught.value.field in GENERATION_FIELDS


# -- GenerationRequest JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        GenerationRequest(prompt="a cat"),
        GenerationRequest(prompt="a cat", magic_prompt=False, seed=0, num_images=1),
        GenerationRequest(
            prompt="p",
            aspect_ratio="16:9",
            rendering_speed="TURBO",
            output_format="png",
            seed=42,
            negative_prompt="n",
            style_type="DESIGN",
            magic_prompt=True,
            num_images=2,
            reference_image_url="https://images.example/a.png",
            provider_options={"x": {"y": [1, 2]}},
        ),
    ],
)
def test_generation_request_round_trip(request_: GenerationRequest) -> None:
    encoded = request_.to_json()
    assert GenerationRequest.from_json(json.loads(json.dumps(encoded))) == request_


def test_to_json_keeps_only_set_fields() -> None:
    assert GenerationRequest(prompt="a cat").to_json() == {"prompt": "a cat"}
    assert GenerationRequest(prompt="a cat", magic_prompt=False, seed=0).to_json() == {
        "prompt": "a cat",
        "magic_prompt": False,
        "seed": 0,
    }
    assert GenerationRequest(prompt="a", provider_options={"k": 1}).to_json() == {
        "prompt": "a",
        "provider_options": {"k": 1},
    }


def test_from_json_ignores_fields_it_does_not_know() -> None:
    assert GenerationRequest.from_json({"prompt": "a", "provider": "x", "metadata": {}}) == GenerationRequest("a")


def test_image_count() -> None:
    assert GenerationRequest(prompt="a").image_count == 1
    assert GenerationRequest(prompt="a", num_images=3).image_count == 3


# -- provider_options may not override what was checked (issue 14, item 8) ---------------------------


def _adapters() -> dict[str, Any]:
    from service.providers.registry import adapters

    return adapters()


@pytest.mark.parametrize(
    ("provider", "key"),
    [
        # keys each adapter sets on the wire itself
        ("aivideoapi", "rendering_speed"),
        ("aivideoapi", "size"),
        ("aivideoapi", "model"),
        ("aivideoapi", "callback_url"),
        ("apiframe", "model"),
        ("apiframe", "webhook_url"),
        ("apiframe", "ideogramParams"),
        ("segmind", "num_images"),
        ("segmind", "image_size"),
        ("segmind", "rendering_speed"),
        ("segmind", "enable_prompt_expansion"),
        ("apiinone", "model"),
        ("apiinone", "size"),
        ("apiinone", "rendering_speed"),
        # the request vocabulary, whatever the provider's wire calls it
        ("apiframe", "rendering_speed"),
        ("aivideoapi", "num_images"),
        ("apiinone", "prompt"),
        # a callback URL under any usual name, for every provider
        ("apiinone", "callback_url"),
        ("segmind", "webhook"),
        ("aivideoapi", "webhook_url"),
        # spelt otherwise: a lenient provider would still read it
        ("aivideoapi", "renderingSpeed"),
        ("apiframe", "Webhook-URL"),
        ("segmind", "NUM_IMAGES"),
        ("aivideoapi", "callbackUrl"),
    ],
)
def test_provider_options_that_override_a_checked_field_are_refused(provider: str, key: str) -> None:
    caps = _adapters()[provider].capabilities
    request = GenerationRequest(prompt="a cat", provider_options={"style": "vivid", key: "x"})
    with pytest.raises(RequestError) as caught:
        check(request, caps, provider)
    assert caught.value.code == "reserved_option"
    assert caught.value.field == f"provider_options.{key}"
    assert repr(key) in caught.value.message


@pytest.mark.parametrize(
    ("provider", "options"),
    [
        ("aivideoapi", {"style": "vivid", "n_steps": 3}),
        ("apiframe", {"magic_prompt_option": "Auto"}),  # inside ideogramParams on the wire, not the top level
        ("segmind", {"enable_safety_checker": False}),
        ("apiinone", {"quality": "hd"}),
        ("aivideoapi", {"simulate": {"latency": 1}}),
    ],
)
def test_other_provider_options_pass(provider: str, options: dict[str, Any]) -> None:
    check(GenerationRequest(prompt="a cat", provider_options=options), _adapters()[provider].capabilities, provider)


@pytest.mark.parametrize("provider", ["aivideoapi", "apiframe", "segmind", "apiinone"])
def test_every_key_an_adapter_sets_is_reserved(provider: str) -> None:
    """The table above cannot drift from the adapters: each key a full submission puts where
    provider_options are merged (aivideoapi: `input`; the others: the body) is refused as an option."""
    adapter = _adapters()[provider]
    caps = adapter.capabilities
    full = GenerationRequest(
        prompt="a cat",
        aspect_ratio=caps.aspect_ratios[0] if caps.aspect_ratios else None,
        rendering_speed="TURBO",
        output_format=caps.output_formats[0] if caps.output_formats else None,
        seed=1 if caps.seed_range else None,
        negative_prompt="blur" if caps.negative_prompt else None,
        style_type=caps.style_types[0] if caps.style_types else None,
        magic_prompt=True if caps.magic_prompt else None,
        num_images=caps.num_images_range[1],
        reference_image_url="https://images.example/ref.png" if caps.reference_image else None,
    )
    wire = adapter.submit_request(full, "https://hooks.example/callbacks/t").json
    assert wire is not None
    keys = (set(wire) | set(wire.get("input", {}))) - {"input"}
    for key in keys:
        assert reserved_option({key: 1}, caps.wire_keys) == key, key


@pytest.mark.parametrize(("value", "parsed"), [(0.1, 0.1), (1, 1.0), (0.0001, 0.0001), (None, None)])
def test_max_price_usd(value: Any, parsed: float | None) -> None:
    """SPEC §8: optional, a positive number of US dollars; the routing leaves out what costs more."""
    submission = parse_submission(minimal(max_price_usd=value))
    assert submission.max_price_usd == parsed
    assert submission.max_price_usd is None or type(submission.max_price_usd) is float


def test_a_wrong_max_price_says_what_is_expected() -> None:
    error = refused(minimal(max_price_usd=-1))
    assert error.message == "max_price_usd must be a positive number of US dollars, such as 0.10"


# -- provider: one, "auto", or candidates (SPEC §8) --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("apiframe", "apiframe"), ("auto", "auto"), (["apiframe", "aivideoapi"], ("apiframe", "aivideoapi"))],
)
def test_provider_is_one_auto_or_candidates(value: Any, parsed: Any) -> None:
    assert parse_submission(minimal(provider=value)).provider == parsed


@pytest.mark.parametrize("value", [[], ["a", "a"], ["a", 1], ["a", ""], [f"p{i}" for i in range(17)]])
def test_provider_candidates_are_distinct_names(value: Any) -> None:
    error = refused(minimal(provider=value))
    assert (error.field, error.code) == ("provider", "invalid_field")
    assert "list" in error.message
