"""The OpenAPI document is the contract: schemathesis (its engine, the phases `st run` runs:
examples, coverage, fuzzing, stateful) generates requests from /openapi.json of the live session
server and checks every answer against the document with every check it has: no 5xx, status
codes, content types, headers and bodies as declared, schema-valid requests accepted, invalid
ones refused with a 4xx, a method the path lacks answered 405 with an Allow header, ...

Bounded: a few examples per operation and phase, so it runs in about two minutes on the 2-core
machine. Left out: POST /api/personas and POST /api/traits (and POST .../{name}/tune), because
every accepted request starts an extraction (tuning) job that rolls out through the same engine
for minutes, slowing every later test (their codes and errors are covered by
tests/server/test_srv_jobs_*.py, test_srv_errors.py and test_srv_tune_live.py);
PUT /api/{personas,traits}/{name}/vector, because its body is a safetensors file, a format a
JSON schema cannot describe (so every generated "valid" body is refused), and an accepted one
would add vectors to the shared store (uploads: test_srv_rest.py, test_srv_store_disk.py).
What the fuzz may change in the shared server (steering scale, loaded set) is put back after it.
"""
from __future__ import annotations

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

MAX_EXAMPLES = 5
# Generated max_tokens are cut to this: the tiny random model seldom stops by itself, so each
# generation runs to max_tokens (thousands would make the fuzz slow), and max_tokens plus the
# prompt must fit the context, a rule across fields that a JSON schema cannot state (the
# document says it in words; test_srv_errors.py tests the 400).
FUZZ_MAX_TOKENS = 8
JOB_STARTERS = r"^/api/(personas|traits)(/\{name\}/tune)?$"
UPLOADS = r"^/api/(personas|traits)/\{name\}/vector$"


@pytest.fixture
def restore_server(server, steer_vectors):
    before = httpx.get(server.base_url + "/api/status", timeout=30).json()
    yield
    httpx.post(server.base_url + "/api/steering-scale", json={"scale": before["steering_scale"]},
               timeout=30).raise_for_status()
    for collection, names in before["loaded"].items():
        for name in names:
            httpx.post(f"{server.base_url}/api/{collection}/{name}/load", timeout=30)


# (operation, check, words in the answer): findings that are schemathesis' and not the server's.
# Its coverage phase builds bodies from the properties alone and ignores a schema's top-level
# anyOf, which is how the document says /api/chat needs a message in `message`, `messages`,
# `system` or `history`; such a body gets that documented 400 (the fuzzing phase honours it).
# `safety` needs the assistant axis in the store, a rule on the server's state (like a persona
# that must exist, which is a 404) that the document states in words; the session store has none.
NOT_OURS = [("POST /api/chat", "positive_data_acceptance", "give `message` or `messages`"),
            # the same top-level anyOf says equalizing by norm needs `names`
            ("POST /api/vectors/equalize", "positive_data_acceptance",
             "equalizing by norm needs at least two names"),
            # by tuned needs a tuned vector in the store (a rule on the server's state, in words
            # in the document); the session store has none
            ("POST /api/vectors/equalize", "positive_data_acceptance", "not_tuned")] + [
    (op, "positive_data_acceptance", "axis_missing")
    for op in ("POST /api/chat", "POST /v1/chat/completions", "POST /v1/completions")]


def not_ours(case, check: str, answer) -> bool:
    text = answer.content.decode(errors="replace") if answer is not None else ""
    label = f"{case.method.upper()} {case.operation.path}"
    return any(label == op and check == name and words in text
               for op, name, words in NOT_OURS)


def failures_of(event) -> list[str]:
    out = []
    if isinstance(event, events.ScenarioFinished):
        for case_id, checks in event.recorder.checks.items():
            for check in checks:
                if check.failure_info is not None:
                    case = event.recorder.cases[case_id].value
                    f = check.failure_info.failure
                    seen = event.recorder.interactions.get(case_id)
                    answer = seen.response if seen is not None else None
                    if not_ours(case, check.name, answer):
                        continue
                    out.append(f"{event.recorder.label} [{check.name}] {f.title}: "
                               f"{(f.message or '')[:300]}\n    {case.method} {case.formatted_path}"
                               f" body={str(case.body)[:400]}\n    -> "
                               f"{answer.status_code if answer else None} "
                               f"{answer.content[:300] if answer else b''!r}")
    elif isinstance(event, events.NonFatalError):
        out.append(f"{event.label}: error {event.value!r}"[:600])
    return out


def test_every_answer_matches_the_openapi_document(server, restore_server):
    config = SchemathesisConfig.from_dict({
        "seed": 17,
        "request-timeout": 120,
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
        "checks": {"enabled": True, "max_response_time": 120},
    })
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json", config=config)
    schema = (schema.exclude(method="POST", path_regex=JOB_STARTERS)
              .exclude(method="PUT", path_regex=UPLOADS))

    @schema.hook
    def map_case(context, case):
        if isinstance(case.body, dict):
            for key in ("max_tokens", "max_completion_tokens"):
                value = case.body.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and value > FUZZ_MAX_TOKENS:
                    case.body[key] = FUZZ_MAX_TOKENS
        return case

    found, tested = [], set()
    for event in schemathesis.engine.from_schema(schema).execute():
        found += failures_of(event)
        if isinstance(event, events.ScenarioFinished) and event.recorder.cases:
            tested.add(event.recorder.label)
        if isinstance(event, events.EngineFinished):
            break
    assert len(tested) >= 28, sorted(tested)        # 32 operations, less the four left out
    assert not found, f"{len(found)} failures:\n" + "\n".join(sorted(set(found))[:80])
