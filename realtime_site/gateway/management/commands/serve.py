"""``python manage.py serve``: the whole system on this machine, for the README's run command.

Migrates, makes sure a demo user exists (its password is printed once, when it is created), starts a
runner with the embedded model and the gateway under daphne, prints where to go, and stops both on
Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from realtime_site.gateway.management.commands.demo_user import ensure_demo_user
from realtime_site.protocol import closing_frame_bytes


class Command(BaseCommand):
    help = "Run the runner and the gateway together (development and demos)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--runner-port", type=int, default=8765)
        parser.add_argument("--apps", default=None, help="the runner's --apps (default: its catalogue)")

    def handle(self, *args, host: str, port: int, runner_port: int, apps: str | None, **options) -> None:
        call_command("check")  # a missing front-end install stops here, naming the command that fixes it
        call_command("migrate", verbosity=0, interactive=False)
        call_command("collectstatic", verbosity=0, interactive=False)
        login = ensure_demo_user()
        root = Path(settings.BASE_DIR)
        env = {**os.environ, "RUNNER_URLS": f"ws://127.0.0.1:{runner_port}"}
        runner_cmd = [sys.executable, "-m", "realtime_site.runner", "--port", str(runner_port)]
        if apps:
            runner_cmd += ["--apps", apps]
        cap = closing_frame_bytes(settings.REALTIME_MAX_FRAME_BYTES)
        gateway_cmd = [
            sys.executable, "-m", "daphne", "-b", host, "-p", str(port),
            # Twice the frame cap: frames between the two get PAYLOAD_TOO_LARGE and the socket lives.
            "--websocket-max-message-size", str(cap), "--websocket-max-frame-size", str(cap),
            *(["--proxy-headers"] if settings.REALTIME_PROXY_HEADERS else []),  # client address from the proxy
            "realtime_site.asgi:application",
        ]  # fmt: skip
        processes = [subprocess.Popen(runner_cmd, cwd=root, env=env)]
        processes.append(subprocess.Popen(gateway_cmd, cwd=root, env=env))
        shown = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/"
        self.stdout.write(f"\nOpen {shown} and log in as {login}\n")
        self.stdout.write("Ctrl+C stops the gateway and the runner.\n")
        stop = False

        def on_signal(signum, frame):
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            while not stop and all(p.poll() is None for p in processes):
                time.sleep(0.3)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        failed = [p.args[2] for p in processes if p.returncode not in (0, -signal.SIGTERM)]
        if failed and not stop:
            sys.exit(f"stopped: {', '.join(map(str, failed))} exited")
