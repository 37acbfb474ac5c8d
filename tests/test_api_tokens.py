"""The TCP listener's bearer tokens: from the config, $SKILLFS_TOKEN and --token-file, never
from the command line (every local user can read /proc/PID/cmdline), and checked on every
kind of request, WebSocket handshakes included."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from conftest import SKILLFS, Daemon, is_mounted, run

TOKENS = {"config": "cfg-token-1f3a", "env": "env-token-9b2c", "file": "file-token-77d0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_upgrade(port: int, headers: str = "") -> bytes:
    """A WebSocket handshake by hand; returns the head of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET /api/v1/ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Sec-WebSocket-Version: 13\r\n{headers}\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def test_tokens_come_from_config_env_and_file_never_argv(tmp_path):
    port = free_port()
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# one token a line\n\n  {TOKENS['file']}  \n")
    d = Daemon(tmp_path / "d", ["--listen", f"127.0.0.1:{port}",
                                "--token-file", str(token_file), "--learner", "off"])
    d.home.mkdir(parents=True)
    (d.home / "config.toml").write_text(f'tokens = ["{TOKENS["config"]}"]\n')
    d.env["SKILLFS_TOKEN"] = TOKENS["env"]
    d.start()
    try:
        cmdline = Path(f"/proc/{d.pid}/cmdline").read_bytes()
        assert b"--token-file" in cmdline
        for token in TOKENS.values():
            assert token.encode() not in cmdline
        base = f"http://127.0.0.1:{port}"
        for source, token in TOKENS.items():
            r = httpx.get(f"{base}/api/v1/learning_spaces",
                          headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, source
        r = httpx.get(f"{base}/api/v1/learning_spaces",
                      headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and r.headers["x-request-id"]

        # a WebSocket handshake without a token is refused by the token check...
        head = raw_upgrade(port)
        assert head.startswith(b"HTTP/1.1 401"), head
        assert b"www-authenticate: bearer" in head.lower()
        head = raw_upgrade(port, "Authorization: Bearer wrong\r\n")
        assert head.startswith(b"HTTP/1.1 401"), head
        # ...and with one it gets past it (to a router that serves no WebSocket)
        head = raw_upgrade(port, f"Authorization: Bearer {TOKENS['file']}\r\n")
        assert head.startswith(b"HTTP/1.1 403"), head
        assert httpx.get(f"{base}/api/v1/ping",
                         headers={"Authorization": f"Bearer {TOKENS['env']}"}).json() == \
            {"code": 0, "msg": "pong"}
    finally:
        d.cleanup()


def test_token_on_argv_is_refused(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env_home = f"SKILLFS_HOME={tmp_path / 'home'}"
    r = run("env", env_home, SKILLFS, "mount", str(mnt), "--listen", "127.0.0.1:1",
            "--token", "secret", check=False)
    assert r.returncode == 2 and "--token-file" in r.stderr and "SKILLFS_TOKEN" in r.stderr
    assert not is_mounted(mnt)
    r = run("env", env_home, "SKILLFS_TOKEN=", SKILLFS, "mount", str(mnt),
            "--listen", "127.0.0.1:1", check=False)
    assert r.returncode == 1 and "needs a bearer token" in r.stderr
    assert not is_mounted(mnt)
