"""Job lifecycle through the real server and the real extraction code: create a trait over the
API, watch SSE progress, use it in the next request (no restart), delete it; a persona from a
description on the tiny random model fails cleanly (it cannot write valid persona prompts)."""
from __future__ import annotations

import json

import httpx

MSG = [{"role": "user", "content": "Tell me about the weather today."}]


def watch(server, job_id: str, timeout=900) -> list[tuple[str, dict]]:
    events, name = [], None
    with httpx.Client(timeout=timeout) as c:
        with c.stream("GET", f"{server.base_url}/api/jobs/{job_id}/events") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    snap = json.loads(line[6:])
                    events.append((name, snap))
                    if snap["status"] in ("succeeded", "failed", "cancelled"):
                        break
    return events


def test_trait_job_lifecycle(server, steer_vectors):
    with server.client() as c:
        r = c.post("/api/traits", json={"word": "cheerful", "opposite": "gloomy"})
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert job["status"] in ("queued", "running") and job["vector_name"] == "cheerful"
        assert r.headers["location"] == f"/api/jobs/{job['id']}"
        # a second job for the same name is refused while the first runs
        assert c.post("/api/traits", json={"word": "cheerful",
                                           "opposite": "sad"}).status_code == 409
        events = watch(server, job["id"])
        final = events[-1][1]
        assert final["status"] == "succeeded", final
        assert any(name == "progress" for name, _ in events)
        assert all(set(s["progress"]) <= {"stage", "done", "total", "message"}
                   for name, s in events if name == "progress")
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "succeeded"
        assert job["id"] in [j["id"] for j in c.get("/api/jobs").json()["jobs"]]
        info = c.get("/api/traits/cheerful").json()
        assert info["metadata"]["word"] == "cheerful" and info["loaded"] is True
        plain = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 1,
                                                     "temperature": 0, "logprobs": True,
                                                     "top_logprobs": 3}).json()
        used = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 1,
                                                    "temperature": 0, "logprobs": True,
                                                    "top_logprobs": 3,
                                                    "traits": {"cheerful": 4.0}})
        assert used.status_code == 200, used.text
        assert used.json()["steering"]["traits"] == {"cheerful": 4.0}
        assert used.json()["choices"][0]["logprobs"] != plain["choices"][0]["logprobs"]
        assert c.delete("/api/traits/cheerful").status_code == 200
        assert c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 1,
                                                    "traits": {"cheerful": 1}}).status_code == 404


def test_persona_from_description_fails_cleanly_on_a_random_model(server, steer_vectors):
    """The served model must write persona prompts as JSON (structured outputs through this
    server); the tiny random model cannot, so the job fails with a one-line reason and leaves
    nothing in the store."""
    with server.client() as c:
        r = c.post("/api/personas", json={"name": "baker",
                                          "description": "a cheerful baker who loves bread"})
        assert r.status_code == 202, r.text
        events = watch(server, r.json()["job"]["id"])
        final = events[-1][1]
        assert final["status"] == "failed", final
        assert final["error"] and "\n" not in final["error"]
        assert "Traceback" not in final["error"]
        assert c.get("/api/personas/baker").status_code == 404
