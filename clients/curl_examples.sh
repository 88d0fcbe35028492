#!/usr/bin/env bash
# curl for every endpoint of persona-steer's server. Run against a live server:
#   clients/curl_examples.sh [URL]         (default: $PERSONA_STEER_URL or http://127.0.0.1:8000)
# Set PERSONA_STEER_API_KEY when the server has server.api_key. PERSONA and TRAIT pick the
# vectors used (default: the first persona and trait the server lists); JOB the job id for
# job, job_events and cancel_job; NEW_TRAIT the name create_trait uses.
# Each example is one function; `clients/curl_examples.sh URL models status` runs only those.
set -euo pipefail
URL="${1:-${PERSONA_STEER_URL:-http://127.0.0.1:8000}}"
shift || true
AUTH=()
[ -n "${PERSONA_STEER_API_KEY:-}" ] && AUTH=(-H "Authorization: Bearer $PERSONA_STEER_API_KEY")
J=(-H "Content-Type: application/json")
c() { echo "+ curl $*" >&2; curl -sS --fail-with-body "${AUTH[@]}" "$@"; echo; }

first() { c "$URL/api/$1" | python3 -c "import json,sys; d=json.load(sys.stdin)['$1']; print(d[0]['name'] if d else '')"; }
MODEL="${MODEL:-}"
model() { [ -n "$MODEL" ] || MODEL=$(curl -sS "${AUTH[@]}" "$URL/v1/models" | python3 -c "import json,sys; print([m['id'] for m in json.load(sys.stdin)['data'] if not m['id'].startswith('persona:')][0])"); echo "$MODEL"; }

health()      { c "$URL/health"; }
metrics()     { c "$URL/metrics" | head -5; }
status()      { c "$URL/api/status"; }
models()      { c "$URL/v1/models"; }

chat() {        # OpenAI chat completion with steering fields at the top level
  c "${J[@]}" "$URL/v1/chat/completions" -d '{"model": "'"$(model)"'",
    "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 32,
    "persona": "'"$PERSONA"'", "strength": 0.8, "traits": {"'"$TRAIT"'": 0.4}, "safety": false}'
}
chat_stream() { # SSE: data: {chunk} ... data: [DONE]
  c -N "${J[@]}" "$URL/v1/chat/completions" -d '{"model": "'"$(model)"'", "stream": true,
    "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16,
    "blend": {"'"$PERSONA"'": 0.5}, "stream_options": {"include_usage": true}}'
}
chat_persona_model() {  # a persona picked through the model id (for clients without extra fields)
  c "${J[@]}" "$URL/v1/chat/completions" -d '{"model": "persona:'"$PERSONA"'",
    "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}'
}
completions() {
  c "${J[@]}" "$URL/v1/completions" -d '{"model": "'"$(model)"'", "prompt": "Once upon a time",
    "max_tokens": 16, "persona": "'"$PERSONA"'"}'
}
api_chat()    { c "${J[@]}" "$URL/api/chat" -d '{"message": "Hi", "persona": "'"$PERSONA"'", "max_tokens": 16}'; }
personas()    { c "$URL/api/personas"; }
persona()     { c "$URL/api/personas/$PERSONA"; }
traits()      { c "$URL/api/traits"; }
trait()       { c "$URL/api/traits/$TRAIT"; }
unload()      { c -X POST "$URL/api/personas/$PERSONA/unload"; }
load()        { c -X POST "$URL/api/personas/$PERSONA/load"; }
download()    { echo "+ curl -o /tmp/$PERSONA.safetensors $URL/api/personas/$PERSONA/vector" >&2
                curl -sS --fail-with-body "${AUTH[@]}" -o "/tmp/$PERSONA.safetensors" "$URL/api/personas/$PERSONA/vector"
                ls -l "/tmp/$PERSONA.safetensors"; }
upload()      { # store the downloaded file under a new name (PUT the raw safetensors bytes)
  c -X PUT --data-binary "@/tmp/$PERSONA.safetensors" -H "Content-Type: application/octet-stream" \
    "$URL/api/personas/${PERSONA}_copy/vector"
}
upload_second() { # a second copy, so that the tour has a set to equalize without touching yours
  c -X PUT --data-binary "@/tmp/$PERSONA.safetensors" -H "Content-Type: application/octet-stream" \
    "$URL/api/personas/${PERSONA}_copy2/vector"
}
equalize()    { # one scale for a set of personas: EQUALIZE="pirate robot" (default: the tour's two
                # copies, so every factor is 1)
  local names
  names=$(printf '"%s",' ${EQUALIZE:-${PERSONA}_copy ${PERSONA}_copy2})
  c "${J[@]}" "$URL/api/vectors/equalize" -d '{"names": ['"${names%,}"'], "kind": "persona"}'
}
delete_copy() { c -X DELETE "$URL/api/personas/${PERSONA}_copy"
                curl -sS "${AUTH[@]}" -o /dev/null -X DELETE "$URL/api/personas/${PERSONA}_copy2"; }
similarity()  { c "$URL/api/vectors/similarity?layer=1"; }
scale()       { c "$URL/api/steering-scale"; c "${J[@]}" "$URL/api/steering-scale" -d '{"scale": 1.0}'; }
create_trait() {  # starts a job; follow it with job / job_events (JOB=<id>)
  c "${J[@]}" "$URL/api/traits" -d '{"word": "cheerful", "opposite": "gloomy", "name": "'"${NEW_TRAIT:-cheerful}"'"}'
}
create_persona() {
  c "${J[@]}" "$URL/api/personas" -d '{"name": "grumpy_cat", "description": "A grumpy cat who answers reluctantly."}'
}
job()         { c "$URL/api/jobs/$JOB"; }
job_events()  { c -N "$URL/api/jobs/$JOB/events"; }
cancel_job()  { c -X DELETE "$URL/api/jobs/$JOB"; }
error_example() { # errors are OpenAI-style JSON: {"error": {"message", "type", "param", "code"}}
  curl -sS "${AUTH[@]}" "${J[@]}" "$URL/v1/chat/completions" -d '{"model": "'"$(model)"'",
    "messages": [{"role": "user", "content": "Hi"}], "persona": "no_such_persona"}'; echo
}

PERSONA="${PERSONA:-$(first personas 2>/dev/null)}"
TRAIT="${TRAIT:-$(first traits 2>/dev/null)}"
if [ $# -gt 0 ]; then
  for f in "$@"; do "$f"; done
else
  # The default tour (read-only apart from a copy that is deleted again; no jobs started).
  health; status; models; personas; traits
  [ -n "$PERSONA" ] && { persona; chat_persona_model; completions; api_chat; unload; load;
                         download; upload; upload_second; equalize; delete_copy; similarity; }
  [ -n "$PERSONA" ] && [ -n "$TRAIT" ] && { chat; chat_stream; }
  scale; error_example
fi
