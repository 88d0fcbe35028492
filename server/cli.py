"""`persona-steer serve`: one process, FastAPI under uvicorn with vLLM's AsyncLLM in-process."""
from __future__ import annotations

import argparse
import logging
import os


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from persona_steer.cli import CLIError
    from persona_steer.config import ConfigError, load_config

    from server.app import create_app

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
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port,
                            log_level=args.log_level, timeout_graceful_shutdown=5,
                            # longer than clients' idle expiry (httpx/openai: 5 s), so a client
                            # never reuses a connection the server is closing at that moment
                            timeout_keep_alive=75,
                            ws_max_size=settings.server.max_body_bytes)
    server = uvicorn.Server(config)
    try:
        server.run()
    except OSError as err:
        raise CLIError(f"cannot listen on {settings.server.host}:{settings.server.port}: "
                       f"{err}") from None
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
