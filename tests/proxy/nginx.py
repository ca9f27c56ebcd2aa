"""Debian's nginx as a child process, on free ports, with a config derived from deploy/nginx.conf."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ROOT
from tests.gateway.stack import free_port

NGINX = Path("/usr/sbin/nginx")
DEPLOY_CONFIG = ROOT / "deploy" / "nginx.conf"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, valid for a day; returns (certificate, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _substitute(text: str, pattern: str, replacement: str) -> str:
    text, count = re.subn(pattern, replacement, text)
    assert count == 1, f"deploy/nginx.conf changed: {pattern!r} matched {count} times"
    return text


def site_config(*, https_port: int, http_port: int, gateway_port: int, directory: Path, static: Path) -> str:
    """deploy/nginx.conf with this machine's ports and paths; everything else as deployed."""
    cert, key = self_signed(directory)
    text = DEPLOY_CONFIG.read_text()
    upstreams = r"server 127\.0\.0\.1:8001;\s*server 127\.0\.0\.1:8002;"
    text = _substitute(text, upstreams, f"server 127.0.0.1:{gateway_port};")
    text = _substitute(text, r"listen 80;", f"listen 127.0.0.1:{http_port};")
    text = _substitute(text, r"listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = _substitute(text, r"ssl_certificate +\S+;", f"ssl_certificate {cert};")
    text = _substitute(text, r"ssl_certificate_key +\S+;", f"ssl_certificate_key {key};")
    text = _substitute(text, r"alias /srv/realtime/var/static/;", f"alias {static}/;")
    text = _substitute(text, r"error_log /var/log/nginx/realtime\.error\.log", f"error_log {directory}/site-error.log")
    return _substitute(text, r"access_log /var/log/nginx/realtime\.access\.log", f"access_log {directory}/access.log")


def main_config(directory: Path, site: Path) -> str:
    """The http {} block around the site, with the log format that deploy/nginx.conf documents."""
    log_format = re.search(r"^# (log_format path_only .*;)$", DEPLOY_CONFIG.read_text(), re.MULTILINE)
    assert log_format, "deploy/nginx.conf no longer documents its log_format"
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the test's private temp dir
    return f"""{user}worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    {log_format[1]}
    access_log {directory}/other.access.log path_only;
{temp}
    include {site};
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    directory: Path
    https_port: int

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}"

    def access_log(self) -> str:
        path = self.directory / "access.log"
        return path.read_text() if path.exists() else ""

    def error_logs(self) -> str:
        """The site's own error log and the main one (where an unconfigured server would write)."""
        paths = [self.directory / "site-error.log", self.directory / "error.log"]
        return "".join(path.read_text() for path in paths if path.exists())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: logs are written
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(directory: Path, gateway_port: int, static: Path) -> Nginx:
    directory.mkdir(parents=True, exist_ok=True)
    https_port, http_port = free_port(), free_port()
    site = directory / "site.conf"
    site.write_text(
        site_config(
            https_port=https_port, http_port=http_port, gateway_port=gateway_port, directory=directory, static=static
        )
    )
    conf = directory / "nginx.conf"
    conf.write_text(main_config(directory, site))
    check = subprocess.run(
        [NGINX, "-t", "-p", directory, "-c", conf, "-e", directory / "error.log"], capture_output=True, text=True
    )
    assert check.returncode == 0, f"nginx -t:\n{check.stderr}\n{conf.read_text()}\n{site.read_text()}"
    process = subprocess.Popen(
        [NGINX, "-p", directory, "-c", conf, "-e", directory / "error.log", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    nginx = Nginx(process, directory, https_port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{nginx.https}/accounts/login/", verify=False, timeout=5).status_code == 200:
                return nginx
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            break
    nginx.stop()
    raise RuntimeError("nginx did not serve the login page:\n" + (directory / "error.log").read_text())
