# One image for every process of the service (web, worker, beat, fake provider); the
# command differs per docker-compose service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Requirements first: the layer is rebuilt only when they change, not on every code edit.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are baked into the image (whitenoise serves them). Settings refuse to load
# without a SECRET_KEY; this throwaway one exists only for this build step.
RUN SECRET_KEY=collectstatic-build-only python manage.py collectstatic --noinput --verbosity 0

# Never run the service as root.
RUN useradd --system --uid 10001 --no-create-home app
USER app

EXPOSE 8000
# Default command: the web process. BIND=0.0.0.0:8000 makes it reachable from outside.
ENV BIND=0.0.0.0:8000
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
