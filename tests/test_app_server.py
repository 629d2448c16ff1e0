"""The server answers only to the host names it is configured for (DNS rebinding is refused).

A real ``streamlit run`` with the project's ``.streamlit/config.toml``; raw websocket handshakes
to its stream endpoint, one with this machine's name and one with a foreign Host header and a
matching Origin, as a rebinding page would send.
"""
import base64
import os
import socket

import pytest

from test_e2e_browser import start_app, stop_app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("server-cache")
    proc, url = start_app(cache, cache / "streamlit.log")
    yield int(url.rsplit(":", 1)[1])
    stop_app(proc)


def handshake(port: int, host: str) -> str:
    """The status line the server answers a websocket upgrade with, sent with ``host``."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: http://{host}\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def test_the_configured_host_is_accepted(server):
    assert " 101 " in handshake(server, f"127.0.0.1:{server}")
    assert " 101 " in handshake(server, f"localhost:{server}")


@pytest.mark.parametrize("host", ["attacker.example", "rebind.attacker.example:{port}", "127.0.0.1.nip.io"])
def test_a_foreign_host_header_is_refused_even_with_a_matching_origin(server, host):
    status = handshake(server, host.format(port=server))
    assert " 101 " not in status, status
    assert " 403 " in status, status
