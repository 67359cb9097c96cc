# One image for every process of the service (web, worker, beat, fake provider); the
# command differs per docker-compose service.
#
# Two stages. `build` installs the locked runtime set (requirements.txt: uv.lock exported
# without any dependency group, hashes included) into a virtualenv with uv, compiles it to
# bytecode and collects the static files. The run stage starts again from a clean slim
# Python and copies only that virtualenv, the application code and the static files: no
# compiler, no uv, pip or package cache, no tests, benchmarks, docs or CI files (those never
# enter the build context: .dockerignore).

# Both stages must use the same interpreter: the virtualenv points at its path.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never

# The same uv as the Makefile's UV_VERSION.
ARG UV_VERSION=0.13.9
RUN pip install "uv==${UV_VERSION}"

# Requirements first: this layer is rebuilt only when the lock's export changes. The
# virtualenv lives at the path it keeps in the run stage (its scripts' shebangs name it).
# --require-hashes: every file checked against the lock; --no-build: wheels only, so no
# compiler is ever needed; sync: exactly that set, nothing else.
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv --without-pip /opt/venv \
    && uv pip sync --python /opt/venv/bin/python --require-hashes --no-build \
        --compile-bytecode /tmp/requirements.txt

WORKDIR /app
COPY . .
# Static files are baked into the image (whitenoise serves them). Settings refuse to load
# without a SECRET_KEY; this throwaway one exists only for this build step. The code is
# compiled here too, since the run stage's user may not write next to it.
RUN SECRET_KEY=collectstatic-build-only /opt/venv/bin/python manage.py collectstatic \
        --noinput --verbosity 0 \
    && /opt/venv/bin/python -m compileall -q /app


FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Never run the service as root. Code and packages stay root-owned: read-only to it.
RUN useradd --system --uid 10001 --no-create-home app

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER app

EXPOSE 8000
# Default command: the web process. BIND=0.0.0.0:8000 makes it reachable from outside.
ENV BIND=0.0.0.0:8000
# The web process answers /healthz (no database or Redis round trip: liveness) on BIND's
# port. The standard library only: the image has no curl or wget. docker-compose gives
# worker, beat and the fake provider checks of their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('BIND', ':8000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
