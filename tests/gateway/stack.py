"""A real gateway (daphne) in front of real runners, each its own process, on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ROOT, RunnerProcess, start_runner
from tests.logs import PASSWORD_LITERAL, RUN

SECRETS = ("RUNNER_SECRET", "REALTIME_JWT_SECRET", "DJANGO_SECRET_KEY")  # in a stack's environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GatewayStack:
    var_dir: Path
    runners: list[RunnerProcess]
    env: dict[str, str]
    port: int = 0
    daphne: subprocess.Popen[str] | None = None
    log_name: str = "daphne.log"
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.var_dir / self.log_name
        RUN.add_file(self.log_path)
        for name in SECRETS:
            RUN.remember(name, self.env.get(name))

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        for arg in args:  # the passwords of the users it makes
            for match in PASSWORD_LITERAL.finditer(arg):
                RUN.remember("password", match[2])
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        if args[0] == "create_api_key":
            RUN.remember("API key", done.stdout)
        RUN.remember_shapes(done.stdout)  # keys and tokens it printed
        return done.stdout

    def query(self, code: str) -> object:
        """Evaluate Python in a Django shell of this stack's database; returns its JSON output."""
        return json.loads(self.manage("shell", "-v", "0", "-c", f"import json; print(json.dumps({code}, default=str))"))

    def start_gateway(self) -> None:
        self.port = free_port()
        # Twice the frame cap, as `manage.py serve` and deploy/ run daphne: frames between the two get
        # PAYLOAD_TOO_LARGE, frames above it close the connection (1009).
        cap = str(2 * int(self.env.get("REALTIME_MAX_FRAME_BYTES", str(8 * 1024 * 1024))))
        with self.log_path.open("a") as log:  # the child keeps its own descriptor
            self.daphne = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                 "--websocket-max-message-size", cap, "--websocket-max-frame-size", cap,
                 *(["--proxy-headers"] if self.env.get("REALTIME_PROXY_HEADERS") == "1" else []),
                 "realtime_site.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.http}/accounts/login/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("daphne did not start:\n" + self.log_path.read_text())

    def stop_gateway(self) -> int | None:
        if self.daphne is None:
            return None
        if self.daphne.poll() is None:
            self.daphne.send_signal(signal.SIGTERM)
        try:
            return self.daphne.wait(30)
        except subprocess.TimeoutExpired:
            self.daphne.kill()
            return self.daphne.wait()

    def close(self) -> None:
        self.stop_gateway()
        for runner in self.runners:
            runner.kill()


def another_gateway(stack: GatewayStack, name: str = "b") -> GatewayStack:
    """A second daphne process on the same database, runners and channel layer."""
    other = GatewayStack(stack.var_dir, [], stack.env, log_name=f"daphne-{name}.log")
    other.start_gateway()
    return other


def start_stack(tmp: Path, runner_args: list[list[str]], extra_env: dict[str, str] | None = None) -> GatewayStack:
    runners = [start_runner(*args) for args in runner_args]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("RUNNER_SECRET", "DATABASE_URL", "REDIS_URL")},
        "REALTIME_VAR_DIR": str(tmp),
        "RUNNER_URLS": ",".join(r.ws_base for r in runners),
        "RUNNER_HEALTH_INTERVAL": "0.5",
        "USAGE_FLUSH_INTERVAL": "1",
        "DJANGO_SETTINGS_MODULE": "realtime_site.settings",
        **(extra_env or {}),
    }
    stack = GatewayStack(tmp, runners, env)
    try:
        stack.manage("migrate", "--noinput")
        if (secret_key := tmp / "secret_key").exists():  # made by settings when DJANGO_SECRET_KEY is unset
            RUN.remember("SECRET_KEY", secret_key.read_text())
        stack.manage("collectstatic", "--noinput", "-v", "0")  # whitenoise indexes files at start
        stack.start_gateway()
    except Exception:
        stack.close()
        raise
    return stack
