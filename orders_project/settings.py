"""Settings for the orders service, read from the environment (12-factor).

Every setting has a safe local default so that `make run` works on a laptop; with DEBUG off
(the default) the service refuses to start with a missing or default SECRET_KEY, and with
ENVIRONMENT=production it also refuses every local default that would be unsafe there
(see core/deploy_guard.py) and turns the HTTPS protections on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from core.deploy_guard import secret_key_problem, webhook_secrets_problem
from core.env import env_bool, env_int, env_list, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULT_SECRET_KEY = "insecure-default-change-me"  # noqa: S105 - the value production refuses

DEBUG = env_bool("DEBUG", False)
# `make run` generates a key once into .local/secret_key; reading it here lets a developer
# run `manage.py ...` by hand in the same checkout. Production sets SECRET_KEY.
_LOCAL_SECRET_KEY_FILE = Path(
    os.environ.get("LOCAL_SECRET_KEY_FILE", BASE_DIR / ".local" / "secret_key")
)
SECRET_KEY = os.environ.get("SECRET_KEY") or (
    _LOCAL_SECRET_KEY_FILE.read_text().strip()
    if _LOCAL_SECRET_KEY_FILE.is_file()
    else DEFAULT_SECRET_KEY
)
# ENVIRONMENT=production (set by docker-compose) forbids DEBUG outright: a debug page in
# production would leak settings and stack traces.
# Compared case-insensitively: "Production" must not slip past the production checks.
ENVIRONMENT = os.environ.get("ENVIRONMENT", "local").strip().lower()
IS_PRODUCTION = ENVIRONMENT == "production"
if IS_PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when ENVIRONMENT=production")
# No local fallbacks in production: a forgotten variable must stop start-up, not quietly
# accept any Host header, talk to a localhost database or sign with the dev webhook secret.
_PRODUCTION_REQUIRED = (
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "PAYMENT_WEBHOOK_SECRETS",
)
if IS_PRODUCTION and (
    _missing := [name for name in _PRODUCTION_REQUIRED if not os.environ.get(name, "").strip()]
):
    raise ImproperlyConfigured(
        f"ENVIRONMENT=production requires {', '.join(_missing)} to be set explicitly "
        "(the local defaults are not safe in production)"
    )
if not DEBUG and SECRET_KEY in ("", DEFAULT_SECRET_KEY):
    raise ImproperlyConfigured(
        "SECRET_KEY is empty or the default: set SECRET_KEY (make run generates one in .local/)"
    )
if IS_PRODUCTION and (_problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(_problem)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS. Production is served over TLS terminated by the reverse proxy, so every protection
# defaults on there (each has its own env var to override it); locally (`make run`, tests)
# they default off, as plain http://127.0.0.1 must work. ALLOW_PLAIN_HTTP=true is the
# explicit production opt-out for the compose demo on http://localhost: without it the
# redirect would loop and the admin's secure cookies would never come back over http.
# `check --deploy` then warns, as it should.
ALLOW_PLAIN_HTTP = IS_PRODUCTION and env_bool("ALLOW_PLAIN_HTTP", False)
_HTTPS_ONLY = IS_PRODUCTION and not ALLOW_PLAIN_HTTP
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS_ONLY)
# Container healthchecks and Prometheus call these over plain http inside the network;
# a redirect to https would fail them (patterns match the path without its leading "/").
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)/?$"]
# One year, subdomains included, preload allowed: what a payment service wants and what
# the browsers' preload list requires. `preload` alone submits nothing (an operator does
# that at hstspreload.org). A first rollout can start with SECURE_HSTS_SECONDS=300; a
# parent domain with plain-http subdomains sets SECURE_HSTS_INCLUDE_SUBDOMAINS=false.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if _HTTPS_ONLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", _HTTPS_ONLY)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", _HTTPS_ONLY)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _HTTPS_ONLY)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", _HTTPS_ONLY)
# "META_NAME,value": the header our proxy sets to say the client used https (nginx
# overwrites X-Forwarded-Proto, so a client cannot claim it); empty turns it off.
# On in production even with ALLOW_PLAIN_HTTP: the proxy still tells the truth.
_proxy_ssl_header = [
    part.strip()
    for part in os.environ.get(
        "SECURE_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO,https" if IS_PRODUCTION else ""
    ).split(",")
]
if _proxy_ssl_header == [""]:
    SECURE_PROXY_SSL_HEADER = None
elif len(_proxy_ssl_header) == 2 and all(_proxy_ssl_header):
    SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])
else:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be 'META_NAME,value' (e.g. HTTP_X_FORWARDED_PROTO,https) "
        "or empty"
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "simple_history",
    "axes",
    "core",
    "clients",
    "orders_project.operations",
    "catalog",
    "orders",
    "payments",
    "outbox",
]

MIDDLEWARE = [
    "core.request_id.RequestIdMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.problems.ProblemMiddleware",
    # 400 for NUL/surrogates in the path or query, before any view builds a lookup from them.
    "core.input_guard.QueryInputMiddleware",
    "core.ratelimit.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # From here to ApiPathsEnd: the admin's (and HTML pages') middlewares, which /api/v1/ and
    # the probes skip (core/api_middleware.py); they keep CommonMiddleware.
    "core.api_middleware.ApiPathsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Turns a login that django-axes refused or locked into the 429 lockout page.
    "axes.middleware.AxesMiddleware",
    "core.api_middleware.ApiPathsEnd",
    # django-prometheus' After middleware with a bounded `method` label (no label from input).
    "core.prometheus_middleware.BoundedLabelsAfterMiddleware",
]

ROOT_URLCONF = "orders_project.urls"
WSGI_APPLICATION = "orders_project.wsgi.application"

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

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orders")
DATABASES = {"default": parse_database_url(DATABASE_URL)}
# Django's engine plus django-prometheus' db metrics tallied per request (core/db_metrics.py).
DATABASES["default"]["ENGINE"] = "core.db_engine"
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Short socket timeouts: a Redis outage must degrade requests (fail open), not hang them.
REDIS_SOCKET_TIMEOUT = float(os.environ.get("REDIS_SOCKET_TIMEOUT", "0.5"))
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "orders"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
        },
    }
}

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
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the finders when collectstatic has not run (tests, first start);
# an empty STATIC_ROOT keeps whitenoise from warning about it on every start.
WHITENOISE_USE_FINDERS = True
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Request bodies above this are refused with 413 before they are read.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "USD")

# How many reverse proxies of ours stand in front of gunicorn and append to
# X-Forwarded-For (0: clients connect directly, as under `make run`; docker-compose: 1).
# core/client_address.py trusts the header only that far.
NUM_PROXIES = env_int("NUM_PROXIES", 0)

# /metrics: comma-separated CIDRs of the Prometheus scrapers (e.g. "127.0.0.1/32,10.0.0.0/8"),
# matched against client_ip(); and/or a token the scraper sends as "Authorization: Bearer".
# Either one admits a scrape. With neither set, anyone may scrape locally and nobody in
# production (core/metrics.py).
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
METRICS_BEARER_TOKEN = os.environ.get("METRICS_BEARER_TOKEN", "").strip()
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        # At start-up, not as a 500 on every scrape.
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is not an address or CIDR network"
        ) from _exc

# Orders (SPEC §2-§3).
ORDER_PAYMENT_TIMEOUT = env_int("ORDER_PAYMENT_TIMEOUT", 15 * 60)  # seconds
# Seconds between recounts of the operations page's hourly rollup (orders/rollups.py).
ORDER_ROLLUP_INTERVAL = env_int("ORDER_ROLLUP_INTERVAL", 60)
IDEMPOTENCY_KEY_TTL = env_int("IDEMPOTENCY_KEY_TTL", 24 * 3600)  # seconds, at least
# How long a claimed key stays "in use" if its request dies without releasing it.
# Short is safe: completing needs the claim token, so a request that outlived its lease
# rolls back instead of storing a second outcome; long only delays retries after a crash.
IDEMPOTENCY_LEASE_SECONDS = env_int("IDEMPOTENCY_LEASE_SECONDS", 10)
# Order creation sends its transaction as one unit of work, locks last (core/unit_of_work.py).
# Off: every order takes the locking path (locks first, several round trips), which also
# decides every order that the fast path refers to it. A switch for comparing the two.
ORDER_CREATE_ONE_ROUND_TRIP = env_bool("ORDER_CREATE_ONE_ROUND_TRIP", True)
ORDER_RATE_LIMIT = os.environ.get("ORDER_RATE_LIMIT", "5/60s")
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "600/60s")
# Failed X-API-Key lookups per client address; over it, keys are refused (429) unexamined.
API_KEY_FAILURE_RATE_LIMIT = os.environ.get("API_KEY_FAILURE_RATE_LIMIT", "20/60s")
# Each web process caches known API keys (clients/key_cache.py): a revoked, rotated or
# deleted key is refused everywhere at most API_KEY_CACHE_BOUND seconds after the commit.
# MAX_ENTRIES=0 turns the cache off; MAX_AGE is the backstop for writes that never publish.
API_KEY_CACHE_MAX_ENTRIES = env_int("API_KEY_CACHE_MAX_ENTRIES", 10_000)
API_KEY_CACHE_BOUND = float(os.environ.get("API_KEY_CACHE_BOUND", "1"))
API_KEY_CACHE_MAX_AGE = float(os.environ.get("API_KEY_CACHE_MAX_AGE", "300"))
if not 0 < API_KEY_CACHE_BOUND <= 1:
    raise ImproperlyConfigured("API_KEY_CACHE_BOUND must be more than 0 and at most 1 (seconds)")
RATE_LIMIT_KEY_PREFIX = os.environ.get("RATE_LIMIT_KEY_PREFIX", "orders:rl")

# Staff logins (django-axes; core/login_throttle.py). After
# LOGIN_FAILURE_LIMIT failures for one address, or for one username from any addresses,
# within LOGIN_LOCKOUT_SECONDS, logins are refused (429) before the password hasher runs,
# until that long after the last counted failure. State and audit live in PostgreSQL.
AUTHENTICATION_BACKENDS = [
    # First: a locked login stops here, before ModelBackend hashes the password (~1 s CPU).
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_LOCKOUT_SECONDS", 15 * 60))
# Each entry locks on its own: the address, or the username from any address.
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_CLIENT_IP_CALLABLE = "core.login_throttle.login_client_address"
AXES_HANDLER = "core.login_throttle.LoginThrottleHandler"
AXES_LOCKOUT_CALLABLE = "core.login_throttle.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Attempts refused during a lockout are logged, not stored, and do not extend the lock: a
# flood of them costs one indexed read each, and the lock ends on time for the real user.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# core/admin.py registers the audit read-only instead of axes' own admin.
AXES_ENABLE_ADMIN = False

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["clients.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": ["core.ratelimit.ApiRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "core.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.openapi.ApiAutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}

_API_DESCRIPTION = """\
Products, orders and the payment provider's webhook of one shop (the contract: SPEC.md).

**Authentication.** Order operations need `X-API-Key: <key>` (issued by staff in the admin or
with `manage.py create_api_client NAME`); a client sees and changes only its own orders.
Product reads are public.

**Errors** are `application/problem+json` (RFC 9457) with a stable `code`; each operation
lists, per status, exactly the codes it answers with. Validation errors add `errors`:
`[{"field": "items[0].quantity", "message": "..."}]`.

**Idempotency.** `POST /api/v1/orders/` needs an `Idempotency-Key`: the same key and body
replay the first response byte for byte (`Idempotent-Replayed: true`).

**Rate limits.** Every request counts against its API client's limit (per client address for
public reads), order creation also per customer email. Limited responses carry the IETF draft's
`RateLimit-Policy` and `RateLimit` headers and the older `RateLimit-Limit`,
`RateLimit-Remaining`, `RateLimit-Reset`; a `429` carries `Retry-After`.

**Request ids.** Every response carries `X-Request-ID` (yours when you send a sane one).

**Pages** are cursor pages `{"next", "previous", "results"}`: follow `next` until it is null.

Decimals are strings (`"12.50"`), times ISO 8601 with an offset, ids UUIDs.

**Events.** Every change is also published to the Redis Stream `orders.events`; its contract
(an AsyncAPI 3 document and a JSON Schema per event type and version) is at `/api/events/`.
"""

SPECTACULAR_SETTINGS = {
    "TITLE": "Orders service API",
    "DESCRIPTION": _API_DESCRIPTION,
    "VERSION": "1.0.0",
    # Relative by default: the document describes the host that serves it.
    "SERVERS": [
        {
            "url": os.environ.get("OPENAPI_SERVER_URL", "/"),
            "description": "This service",
        }
    ],
    "TAGS": [
        {"name": "products", "description": "The catalog: products for sale. Public."},
        {"name": "orders", "description": "Place, read and cancel orders. Needs X-API-Key."},
        {"name": "payments", "description": "The payment provider's signed webhook."},
    ],
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Enums named after what they are (the fields are all called `status` or `type`).
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "orders.models.OrderStatus",
        "CancelReasonEnum": "orders.models.CancelReason",
        "WebhookEventTypeEnum": "payments.api.serializers.EVENT_TYPES",
        "WebhookOutcomeEnum": "payments.webhooks.OUTCOMES",
    },
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Payments (SPEC §5).
PAYMENT_PROVIDER_URL = os.environ.get("PAYMENT_PROVIDER_URL", "http://127.0.0.1:8100")
PAYMENT_PROVIDER_TIMEOUT = float(os.environ.get("PAYMENT_PROVIDER_TIMEOUT", "5"))
PAYMENT_WEBHOOK_URL = os.environ.get(
    "PAYMENT_WEBHOOK_URL", "http://127.0.0.1:8000/api/v1/payments/webhook/"
)
# Comma-separated whsec_<base64> secrets; several during a rotation (first = current).
DEFAULT_PAYMENT_WEBHOOK_SECRET = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtY2hhbmdlLW1l"  # noqa: S105
PAYMENT_WEBHOOK_SECRETS = env_list("PAYMENT_WEBHOOK_SECRETS", [DEFAULT_PAYMENT_WEBHOOK_SECRET])
# Secrets anyone can read (the default above, and docs/api.md prints it for the curl
# example): production refuses them, and malformed, short or missing ones.
# tests/security/test_production_settings.py fails if the docs print one not listed here.
PUBLISHED_WEBHOOK_SECRETS = [DEFAULT_PAYMENT_WEBHOOK_SECRET]
if IS_PRODUCTION and (
    _problem := webhook_secrets_problem(
        PAYMENT_WEBHOOK_SECRETS, published=PUBLISHED_WEBHOOK_SECRETS
    )
):
    raise ImproperlyConfigured(_problem)
PAYMENT_WEBHOOK_TOLERANCE = env_int("PAYMENT_WEBHOOK_TOLERANCE", 300)  # seconds, both ways
PAYMENT_WEBHOOK_MAX_BYTES = env_int("PAYMENT_WEBHOOK_MAX_BYTES", 64 * 1024)
# Backoff (seconds) between attempts of a saga step that failed for technical reasons;
# the last value repeats: a provider outage never cancels an order by itself.
PAYMENT_RETRY_BACKOFF = [
    int(x) for x in os.environ.get("PAYMENT_RETRY_BACKOFF", "1,2,4,8,16,30").split(",")
]
PAYMENT_STEP_LEASE_SECONDS = env_int("PAYMENT_STEP_LEASE_SECONDS", 30)
PAYMENT_NUDGE_ON_COMMIT = env_bool("PAYMENT_NUDGE_ON_COMMIT", True)
PAYMENT_STEPS_TIME_BUDGET = float(os.environ.get("PAYMENT_STEPS_TIME_BUDGET", "5"))

# Outbox relay (SPEC §4).
EVENT_STREAM = os.environ.get("EVENT_STREAM", "orders.events")
# The stream's AsyncAPI document (served at /api/events/ with the apps' event schemas).
EVENT_CONTRACT_DOCUMENT = BASE_DIR / "orders_project" / "asyncapi.yaml"
EVENT_STREAM_REDIS_URL = os.environ.get("EVENT_STREAM_REDIS_URL", REDIS_URL)
EVENT_STREAM_MAXLEN = env_int("EVENT_STREAM_MAXLEN", 1_000_000)  # approximate trimming
EVENT_STREAM_SOCKET_TIMEOUT = float(os.environ.get("EVENT_STREAM_SOCKET_TIMEOUT", "2"))
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", 200)
OUTBOX_LEASE_SECONDS = env_int("OUTBOX_LEASE_SECONDS", 60)
OUTBOX_BACKOFF = [int(x) for x in os.environ.get("OUTBOX_BACKOFF", "1,2,4,8,16").split(",")]
OUTBOX_BREAKER_COOLDOWN = float(os.environ.get("OUTBOX_BREAKER_COOLDOWN", "2"))
OUTBOX_DEDUPE_TTL = env_int("OUTBOX_DEDUPE_TTL", 7 * 24 * 3600)
OUTBOX_MAX_EVENT_BYTES = env_int("OUTBOX_MAX_EVENT_BYTES", 256 * 1024)
OUTBOX_RETENTION = env_int("OUTBOX_RETENTION", 7 * 24 * 3600)  # seconds
OUTBOX_RELAY_INTERVAL = float(os.environ.get("OUTBOX_RELAY_INTERVAL", "1"))
# One relay run stops after this long so other tasks on the same worker get their turn.
OUTBOX_RELAY_TIME_BUDGET = float(os.environ.get("OUTBOX_RELAY_TIME_BUDGET", "5"))
# A relay run that found work keeps polling every OUTBOX_RELAY_POLL_INTERVAL seconds until
# it has found none for OUTBOX_RELAY_LINGER seconds, and web processes skip their nudges
# meanwhile (core/nudge.py): low lag under load without a Redis round trip per commit.
OUTBOX_RELAY_LINGER = float(os.environ.get("OUTBOX_RELAY_LINGER", "2"))
OUTBOX_RELAY_POLL_INTERVAL = float(os.environ.get("OUTBOX_RELAY_POLL_INTERVAL", "0.02"))
OUTBOX_NUDGE_ON_COMMIT = env_bool("OUTBOX_NUDGE_ON_COMMIT", True)

# Celery: Redis is the broker; tasks arrive in later issues.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "orders")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps reconnecting through a broker outage of any length (the default gives up
# after 100 tries, about 50 minutes, and exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# RedBeat in a wrapper that survives a Redis outage (stock RedBeat exits, and forgets its
# schedule if Redis comes back empty): orders_project/beat.py.
CELERY_BEAT_SCHEDULER = "orders_project.beat.ResilientRedBeatScheduler"
# Beat wakes at least every 5 s, and RedBeat's lock lives 5x that (25 s): a standby beat
# takes over within ~30 s of the active one dying (with the 300 s default: ~30 minutes).
CELERY_BEAT_MAX_LOOP_INTERVAL = 5
CELERY_REDBEAT_REDIS_URL = CELERY_BROKER_URL
# The Redis client's own options for beat's connection: none (the broker's transport options,
# which RedBeat used to fall back to, mean nothing to a plain Redis client).
CELERY_REDBEAT_REDIS_OPTIONS: dict[str, object] = {}
CELERY_REDBEAT_KEY_PREFIX = os.environ.get("REDBEAT_KEY_PREFIX", "orders:redbeat")
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "relay-outbox": {
        "task": "outbox.tasks.relay_outbox",
        "schedule": OUTBOX_RELAY_INTERVAL,
        "options": {"expires": OUTBOX_RELAY_INTERVAL * 5},
    },
    "run-payment-steps": {
        "task": "payments.tasks.run_payment_steps",
        "schedule": 1.0,
        "options": {"expires": 5},
    },
    "retry-waiting-webhooks": {
        "task": "payments.tasks.retry_waiting_webhooks",
        "schedule": 5.0,
        "options": {"expires": 10},
    },
    "expire-overdue-orders": {
        "task": "orders.tasks.expire_overdue_orders",
        "schedule": env_int("ORDER_EXPIRY_INTERVAL", 5),
        "options": {"expires": 10},
    },
    "refresh-order-hour-rollups": {
        "task": "orders.tasks.refresh_order_hour_rollups",
        "schedule": ORDER_ROLLUP_INTERVAL,
        "options": {"expires": ORDER_ROLLUP_INTERVAL},
    },
    "purge-published-outbox-events": {
        "task": "outbox.tasks.purge_published_outbox_events",
        "schedule": 3600,
    },
    "purge-expired-idempotency-records": {
        "task": "orders.tasks.purge_expired_idempotency_records",
        "schedule": env_int("IDEMPOTENCY_PURGE_INTERVAL", 3600),
    },
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.request_id.RequestIdLogFilter"}},
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own request logger repeats what the access log says, with HTML-era detail.
        "django.request": {"level": "CRITICAL", "propagate": True},
        "django.server": {"level": "WARNING", "propagate": True},
        # One line per task received/succeeded/sent every second drowns everything else;
        # failures are still logged at WARNING and above.
        "celery.app.trace": {"level": "WARNING", "propagate": True},
        "celery.worker.strategy": {"level": "WARNING", "propagate": True},
        "celery.beat": {"level": "WARNING", "propagate": True},
        # django-axes logs each failure with the username masked; login_throttle logs them
        # as structured WARNING lines instead.
        "axes": {"level": "ERROR", "propagate": True},
    },
}

# Debug pages and error e-mails hide *_URL/*_DSN settings too (they carry passwords) and
# mask the password of any URL they would print.
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.debug_filter.CredentialsHidingFilter"

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = False
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
