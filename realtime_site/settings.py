"""Django settings, read from the environment (docs/protocol.md section 7).

No secret lives in the repository: without ``DJANGO_SECRET_KEY`` a random key is generated once
into ``var/secret_key`` (git-ignored) for local use; production sets the variable.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from realtime_site.protocol import DEFAULT_MAX_FRAME_BYTES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("REALTIME_VAR_DIR", BASE_DIR / "var"))  # local state, git-ignored
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_flag(name: str) -> bool:
    """A 0/1 switch, also read by the shell lines of deploy/ (so nothing else is accepted)."""
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise ImproperlyConfigured(f"{name} must be 0 or 1, not {value[:20]!r}")
    return value == "1"


def _local_secret_key() -> str:
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _local_secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

# Behind a TLS proxy (deploy/nginx.conf). The proxy sets X-Forwarded-Proto: trust it for
# request.is_secure() (CSRF's origin check, secure cookies). The client's address: daphne's
# --proxy-headers reads it from X-Forwarded-For, which the proxy overwrites (serve, the Procfile and
# the systemd unit pass the flag when REALTIME_PROXY_HEADERS=1; daphne must then listen on
# 127.0.0.1 only, where nothing but the proxy can reach it).
if env_flag("DJANGO_SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
REALTIME_PROXY_HEADERS = env_flag("REALTIME_PROXY_HEADERS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")  # e.g. https://realtime.example.org:8443
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool(
    "DJANGO_SECURE_COOKIES", env_flag("DJANGO_SECURE_PROXY_SSL_HEADER")
)

# The runners the gateway relays to, and the secret they expect from it.
RUNNER_URLS = env_list("RUNNER_URLS", "ws://127.0.0.1:8765")
RUNNER_SECRET = os.environ.get("RUNNER_SECRET") or None
RUNNER_HEALTH_INTERVAL = float(os.environ.get("RUNNER_HEALTH_INTERVAL", "2"))
# Channel layer: Redis when REDIS_URL is set, else in-memory (one process).
REDIS_URL = os.environ.get("REDIS_URL") or None
CHANNEL_LAYERS = {
    "default": (
        # redis-py 8 times a read out after 5 s by default, as long as channels_redis's blocking pop
        # waits: an idle receive then raised TimeoutError every 5 s. Reads may wait longer than that.
        # A channel holds 1,000 messages, not Channels' 100: a room's busy member receives every other
        # member's ops, and a full channel drops what is sent to it without a word.
        {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                "capacity": 1000,
            },
        }
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
    )
}

# Realtime tokens (docs/protocol.md section 4). The signing key defaults to one derived from SECRET_KEY.
REALTIME_JWT_SECRET = os.environ.get("REALTIME_JWT_SECRET") or None
REALTIME_TOKEN_MAX_LIFETIME = min(3600, int(os.environ.get("REALTIME_TOKEN_MAX_LIFETIME", "120")))
REALTIME_JWT_LEEWAY = 5  # seconds of clock skew tolerated on exp / nbf / iat
# Per-user limits at the gateway; a user's UserLimits row overrides each (null: this default).
REALTIME_MAX_CONNECTIONS = int(os.environ.get("REALTIME_MAX_CONNECTIONS", "8"))
REALTIME_FRAMES_PER_MINUTE = int(os.environ.get("REALTIME_FRAMES_PER_MINUTE", "1800"))
REALTIME_DAILY_FRAME_QUOTA = int(os.environ.get("REALTIME_DAILY_FRAME_QUOTA", "0")) or None  # 0: no quota
REALTIME_MAX_FRAME_BYTES = int(os.environ.get("REALTIME_MAX_FRAME_BYTES", str(DEFAULT_MAX_FRAME_BYTES)))
# With REDIS_URL the per-user limits are shared by the gateway processes under this key prefix.
REALTIME_LIMITS_PREFIX = os.environ.get("REALTIME_LIMITS_PREFIX", "realtime:limits")
# Origins whose pages may open WebSockets with the session cookie. Default: the allowed hosts,
# over http and https, on any port of the run command (http://localhost:8000 ...).
REALTIME_ALLOWED_ORIGINS = env_list("REALTIME_ALLOWED_ORIGINS", "")
# Browser pages on other sites that may call the HTTP app endpoints (CORS); none by default.
REALTIME_CORS_ORIGINS = env_list("REALTIME_CORS_ORIGINS", "")
# An upstream runner session kept for the HTTP endpoints is closed after this long unused.
REALTIME_UPSTREAM_IDLE_SECONDS = float(os.environ.get("REALTIME_UPSTREAM_IDLE_SECONDS", "60"))
# A body as large as the frame cap is read into memory (an app input: base64 grows it by a third).
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, REALTIME_MAX_FRAME_BYTES)
# New connections per client address and second (a token bucket with this burst), refused before any
# database work: a connect storm from one address costs handshakes only. 0: off.
REALTIME_CONNECTS_PER_SECOND = float(os.environ.get("REALTIME_CONNECTS_PER_SECOND", "20"))
REALTIME_CONNECT_BURST = float(os.environ.get("REALTIME_CONNECT_BURST", "60"))
# A credential admitted from the database is admitted again from memory for this long (the database
# confirms each such connection behind its first frames; revocations reach every process at once).
# 0: every connection waits for the database.
REALTIME_ADMISSION_CACHE_SECONDS = float(os.environ.get("REALTIME_ADMISSION_CACHE_SECONDS", "60"))
# Runner sessions opened ahead for the apps and options in use, so a new connection need not wait for
# its upstream handshake. 0: none.
REALTIME_WARM_UPSTREAMS = int(os.environ.get("REALTIME_WARM_UPSTREAMS", "16"))
# The gallery (docs/gallery.md): what one user may keep.
REALTIME_GALLERY_MAX_ITEMS = int(os.environ.get("REALTIME_GALLERY_MAX_ITEMS", "500"))
REALTIME_GALLERY_MAX_BYTES = int(os.environ.get("REALTIME_GALLERY_MAX_MB", "200")) * 2**20
# Shared rooms (docs/rooms.md): how many open rooms one user may own at once.
REALTIME_MAX_OPEN_ROOMS = int(os.environ.get("REALTIME_MAX_OPEN_ROOMS", "20"))
# A client whose results wait unread this long is closed (4408); while it lags, only its newest
# max_buffering results are kept.
REALTIME_STALLED_CLIENT_SECONDS = float(os.environ.get("REALTIME_STALLED_CLIENT_SECONDS", "20"))
# How often usage counts of open connections are written (closing connections are written at once).
USAGE_FLUSH_INTERVAL = float(os.environ.get("USAGE_FLUSH_INTERVAL", "5"))
# At shutdown, how long the usage records still unwritten may wait for the database (then logged, lost).
USAGE_DRAIN_TIMEOUT = float(os.environ.get("USAGE_DRAIN_TIMEOUT", "10"))
# GET /metrics is open to staff sessions and to this bearer token (unset: staff only).
REALTIME_METRICS_TOKEN = os.environ.get("REALTIME_METRICS_TOKEN") or None
# Off only to measure what recording costs (bench/gateway.py): connections are then not recorded.
USAGE_RECORDING = env_bool("REALTIME_USAGE_RECORDING", True)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "realtime_site.static_files.FrontendStaticFiles",  # django.contrib.staticfiles, serving less
    "channels",
    "axes",
    "realtime_site.accounts",
    "realtime_site.usage",
    "realtime_site.gateway",
    "realtime_site.rooms",
    "realtime_site.gallery",
    "realtime_site.staff",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "realtime_site.middleware.ClearFailuresMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: answers a locked-out login
]

# Login throttling (django-axes), for the login page and the admin's: after AXES_FAILURE_LIMIT
# failures for one username from one address, that pair is refused (429, Retry-After) for the
# cool-off; a good login resets the count. The address is REMOTE_ADDR, which daphne sets (from
# X-Forwarded-For only with --proxy-headers): never a header a client could forge.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("REALTIME_LOGIN_FAILURES", "5"))
AXES_COOLOFF_TIME = timedelta(seconds=int(os.environ.get("REALTIME_LOGIN_COOLOFF", "900")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "realtime_site.accounts.lockout.locked_out"
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)  # used only if django-ipware is ever installed
# API keys and tokens: failed checks per client address in a sliding window (accounts.failures),
# shared through Redis when REDIS_URL is set. 0 turns the limit off.
REALTIME_CREDENTIAL_FAILURES = int(os.environ.get("REALTIME_CREDENTIAL_FAILURES", "20"))
REALTIME_CREDENTIAL_FAILURE_WINDOW = float(os.environ.get("REALTIME_CREDENTIAL_FAILURE_WINDOW", "60"))
REALTIME_CREDENTIAL_FAILURE_ADDRESSES = 10_000  # addresses tracked in one process's memory

ROOT_URLCONF = "realtime_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "realtime_site.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Gateway and tools may write at once: wait for the lock rather than fail. The connection is kept
    # (as PostgreSQL's is): opening it again costs each admission about 1.5 ms here.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that is unreachable must not hang the usage writer (or shutdown) for minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
FRONTEND_DIR = BASE_DIR / "frontend"
SERVED_PACKAGES = ("@msgpack/msgpack", "uplot")  # the npm packages the pages import (gateway/checks.py)
STATICFILES_DIRS = [
    FRONTEND_DIR,  # without node_modules (static_files.py); the packages under their own paths:
    *((f"node_modules/{package}", FRONTEND_DIR / "node_modules" / package) for package in SERVED_PACKAGES),
]
STATIC_ROOT = VAR_DIR / "static"  # collectstatic's output, served by whitenoise
STATIC_ROOT.mkdir(exist_ok=True)
# Kept creations (the gallery) go through the default storage: files under var/media, or an
# S3-compatible bucket with REALTIME_S3_BUCKET (django-storages; credentials from the AWS_* variables).
MEDIA_ROOT = VAR_DIR / "media"  # never served as a folder: the gallery's views check who asks
S3_BUCKET = os.environ.get("REALTIME_S3_BUCKET") or None
STORAGES = {
    "default": (
        {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": S3_BUCKET,
                "endpoint_url": os.environ.get("REALTIME_S3_ENDPOINT_URL") or None,
                "default_acl": "private",
                "querystring_auth": True,
            },
        }
        if S3_BUCKET
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG  # in development, serve files without collectstatic
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"realtime_site": {"level": os.environ.get("REALTIME_LOG_LEVEL", "INFO")}},
}
