"""The HTTP client that extraction rollouts and the toy proof share between threads keeps one
connection per thread. httpx's default pool (20 keep-alive connections) closes "surplus" idle
connections when more threads use it, and can close one it has just handed to another thread:
that thread's read then fails with `httpx.ReadError: [Errno 9] Bad file descriptor` (seen once in
`persona-steer toy eval` on a busy machine). Here: a local keep-alive HTTP server counts the TCP
connections opened by 48 threads doing four rounds of requests at once."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from extraction.rollouts import threaded_client

THREADS, ROUNDS = 48, 4


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def process_request(self, request, client_address):
        type(self).connections += 1
        super().process_request(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"        # keep-alive

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server():
    CountingServer.connections = 0
    srv = CountingServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def connections_for(srv, client: httpx.Client) -> int:
    url = f"http://127.0.0.1:{srv.server_address[1]}/"
    barrier = threading.Barrier(THREADS)

    def worker(_):
        for _ in range(ROUNDS):
            barrier.wait()               # all threads in flight at once, every round
            assert client.get(url).text == "ok"

    before = CountingServer.connections
    with client, ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    return CountingServer.connections - before


def test_connections_are_kept_not_closed_and_reopened(counting_server):
    # at most one per thread over all rounds: the pool never closed one it could reuse
    assert connections_for(counting_server, threaded_client(THREADS, timeout=30)) <= THREADS


def test_the_default_pool_closes_connections_it_could_reuse(counting_server):
    """Why the limits are needed: the default pool drops connections between rounds."""
    assert connections_for(counting_server, httpx.Client(timeout=30)) > THREADS
