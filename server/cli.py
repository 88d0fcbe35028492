"""`persona-steer serve`: one process, FastAPI under uvicorn with vLLM's AsyncLLM in-process.

Exit codes: 0 after a SIGTERM drain, 1 when the engine died while serving, 2 when it could not
start (or a bad flag/config); a non-zero exit prints one `error: ...` line last on stderr."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from persona_steer.cli import CLIError
    from persona_steer.config import ConfigError, load_config

    from server.app import create_app
    from server.lifecycle import SteerServer
    from server.security import redact_keys_in_server_logs

    settings = load_config(args.config, overrides=args.overrides)
    try:
        if args.host is not None:
            settings.server.host = args.host
        if args.port is not None:
            settings.server.port = args.port
        if args.model is not None:
            settings.model.name = args.model
        if args.api_key is not None:
            settings.server.api_key = args.api_key or None
    except ValueError as err:  # pydantic validation on assignment
        raise ConfigError(f"invalid flag value: {err}") from None
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.model.kv_cache_gib))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app(settings, config_path=args.config, overrides=args.overrides)
    if args.api_key is not None:
        app.state.ps.api_key_from_flag = True
    # timeout_graceful_shutdown: what uvicorn gives responses still open once the drain
    # (server.lifecycle, bounded by server.shutdown_grace_s) has ended them all
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port,
                            log_level=args.log_level, timeout_graceful_shutdown=5,
                            # longer than clients' idle expiry (httpx/openai: 5 s), so a client
                            # never reuses a connection the server is closing at that moment
                            timeout_keep_alive=75,
                            ws_max_size=settings.server.max_body_bytes)
    redact_keys_in_server_logs()
    state = app.state.ps
    server = SteerServer(config, state)
    try:
        server.run()
    except OSError as err:
        raise CLIError(f"cannot listen on {settings.server.host}:{settings.server.port}: "
                       f"{err}") from None
    if state.exit_code:     # the engine failed to start or died: one line, for the supervisor
        print(f"error: {state.exit_message}", file=sys.stderr, flush=True)
        return state.exit_code
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the OpenAI-compatible steering server "
                                     "(web page at /, API at /v1 and /api)")
    p.add_argument("--host", help="bind address (config server.host)")
    p.add_argument("--port", type=int, help="port (config server.port)")
    p.add_argument("--model", help="model: builtin:tiny|mid|toy-persona, a local path or an "
                                   "HF id (config model.name)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (config "
                                     "server.api_key); empty string turns it off")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_serve)
