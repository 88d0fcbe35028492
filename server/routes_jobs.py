"""Job endpoints: POST /api/personas (description or archetype), POST /api/traits (word +
opposite) start extraction jobs; POST /api/{personas,traits}/{name}/tune starts a tuning job
(extraction/tune.py through this server's own API); GET /api/jobs, GET /api/jobs/{id}, GET /api/jobs/{id}/events
(SSE progress), DELETE /api/jobs/{id} (cancel)."""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from persona_steer.vector_format import VectorFormatError, validate_name

from server.deps import get_state
from server.errors import APIError
from server.jobs import TERMINAL, job_view
from server.openapi import SSE, WITH_BODY, errors
from server.schemas import NamePath, PersonaCreate, TraitCreate, TuneRequest
from persona_steer.store import VectorNotFound

router = APIRouter()


def _jobs(request: Request):
    state = get_state(request)
    if state.jobs is None:
        raise APIError(503, "jobs are not available yet", code="engine_not_ready")
    return state, state.jobs


def _check_name(name: str, param: str = "name") -> str:
    try:
        return validate_name(name)
    except VectorFormatError as err:
        raise APIError(400, str(err), param=param, code="invalid_name") from None


def _check_free(state, kind: str, name: str) -> None:
    if state.store.exists(kind, name):
        raise APIError(409, f"{kind} '{name}' already exists; delete it first",
                       param="name", code="already_exists")
    active = state.jobs.active_for(kind, name)
    if active:
        raise APIError(409, f"a job is already creating {kind} '{name}' (job {active['id']})",
                       param="name", code="job_in_progress")


def _archetypes(settings) -> list[str] | None:
    """Archetypes the job can use (datasets/archetypes/*.json, else the built-in ones)."""
    try:
        from extraction.datasets import archetype_names
        return list(archetype_names(settings))
    except Exception:
        return None   # let the job itself report it


STARTED = {202: {"description": "the job started; `Location` names it"}, **WITH_BODY, **errors(409)}


@router.post("/api/personas", status_code=202, responses=STARTED)
async def create_persona(body: PersonaCreate, request: Request):
    state, jobs = _jobs(request)
    name = _check_name(body.name)
    desc = (body.description or "").strip()
    if bool(desc) == bool(body.archetype):
        raise APIError(400, "give exactly one of `description` (non-empty) or `archetype`",
                       param="description", code="invalid_request")
    if body.archetype:
        _check_name(body.archetype, "archetype")   # it names a file under datasets/archetypes/
        known = _archetypes(state.settings)
        if known is not None and body.archetype not in known:
            raise APIError(400, f"unknown archetype '{body.archetype}' (known: "
                                f"{', '.join(known)})", param="archetype",
                           code="unknown_archetype")
    _check_free(state, "persona", name)
    params = {"name": name, **({"description": desc} if desc else
                               {"archetype": body.archetype})}
    rec = jobs.submit("persona", params, name)
    return JSONResponse({"job": job_view(rec)}, status_code=202,
                        headers={"Location": f"/api/jobs/{rec['id']}"})


@router.post("/api/traits", status_code=202, responses=STARTED)
async def create_trait(body: TraitCreate, request: Request):
    state, jobs = _jobs(request)
    word, opposite = body.word.strip(), body.opposite.strip()
    if not word or not opposite:
        raise APIError(400, "word and opposite must be non-empty", param="word")
    if word.lower() == opposite.lower():
        raise APIError(400, f"word and opposite must differ (both '{word}')", param="opposite",
                       code="invalid_request")
    name = _check_name(body.name or word.lower().replace(" ", "_"))
    _check_free(state, "trait", name)
    rec = jobs.submit("trait", {"word": word, "opposite": opposite, "name": name}, name)
    return JSONResponse({"job": job_view(rec)}, status_code=202,
                        headers={"Location": f"/api/jobs/{rec['id']}"})


def _register_tune(collection: str, kind: str) -> None:
    @router.post(f"/api/{collection}/{{name}}/tune", name=f"tune_{kind}", status_code=202,
                 responses={**STARTED, **errors(404)})
    async def tune_vector(name: NamePath, request: Request, body: TuneRequest | None = None):
        """Sweep layer sets x strengths on held-out questions, score each answer (config
        tune.*), and store the most expressive coherent setting with the vector
        (docs/tuning.md). Progress: GET /api/jobs/{id}/events."""
        state, jobs = _jobs(request)
        _check_name(name)
        if not state.store.exists(kind, name):
            raise VectorNotFound(kind, name, state.store.names(kind))
        active = jobs.active_for(kind, name)
        if active:
            raise APIError(409, f"a job is already working on {kind} '{name}' (job {active['id']})",
                           param="name", code="job_in_progress")
        params = {"kind": kind, "name": name,
                  **(body.model_dump(exclude_none=True) if body is not None else {})}
        rec = jobs.submit(f"tune_{kind}", params, name)
        return JSONResponse({"job": job_view(rec)}, status_code=202,
                            headers={"Location": f"/api/jobs/{rec['id']}"})


_register_tune("personas", "persona")
_register_tune("traits", "trait")


@router.get("/api/jobs")
async def list_jobs(request: Request):
    _, jobs = _jobs(request)
    return {"jobs": [job_view(r) for r in jobs.list()]}


@router.get("/api/jobs/{job_id}", responses=errors(404))
async def get_job(job_id: str, request: Request):
    _, jobs = _jobs(request)
    return job_view(jobs.get(job_id))


@router.delete("/api/jobs/{job_id}", responses=errors(404, 413))
async def cancel_job(job_id: str, request: Request):
    _, jobs = _jobs(request)
    return job_view(jobs.cancel(job_id))


@router.get("/api/jobs/{job_id}/events",
            responses={200: {"content": SSE, "description": "the job's progress events"},
                       **errors(404)})
async def job_events(job_id: str, request: Request):
    """SSE: `event: <status|progress>` with the job record as data, until it ends."""
    _, jobs = _jobs(request)
    rec = jobs.get(job_id)
    q = jobs.subscribe(job_id)

    async def events():
        try:
            yield {"event": rec["status"], "data": json.dumps(job_view(rec))}
            if rec["status"] in TERMINAL:
                return
            while True:
                event, snap = await q.get()
                yield {"event": event, "data": json.dumps(snap)}
                if snap["status"] in TERMINAL:
                    return
        finally:
            jobs.unsubscribe(job_id, q)

    return EventSourceResponse(events(), sep="\n", ping=15)
