# Predictor API image: gunicorn + Flask serving the model store in /models.
#
#   docker build -t predictor .
#   docker run -p 8000:8000 predictor            # serves the demo models baked in
#
# BASE_IMAGE is the usual Python slim image; machines that cannot pull one build a
# local base with compose/local-images.sh (docs/deploy.md). PIP_INDEX_URL points pip
# at a mirror when set (empty: pip's default index).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- deps: a virtualenv with the pinned dependencies -------------------------------
FROM ${BASE_IMAGE} AS deps
ARG PIP_INDEX_URL=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# From pyproject.toml alone: this stage (and the runtime layer copied from it) is
# reused until the pins change, whatever happens to the code.
COPY pyproject.toml deps/constraints.txt ./
RUN python3 -m venv /opt/venv \
 && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['explain']))" > requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} -r requirements.txt -c constraints.txt

# --- build: the package as a wheel, and the demo models trained with it ------------
FROM deps AS build
COPY README.md ./
COPY service ./service
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} -w /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /wheels/*.whl \
 && /opt/venv/bin/predictor train-demo --store /models

# --- runtime: no build files, no pip cache, no root -------------------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="predictor" \
      org.opencontainers.image.description="Serve scikit-learn models: gunicorn + Flask, Redis cache, Prometheus metrics"
RUN groupadd --system --gid 10001 predictor \
 && useradd --system --uid 10001 --gid predictor --home-dir /home/predictor \
            --create-home --shell /usr/sbin/nologin predictor
# Big and stable first (the dependencies), small and changing last (the package, the models).
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
COPY --from=build --chown=10001:10001 /models /models
# The signing key's directory (compose mounts a volume here; Kubernetes sets
# PREDICTOR_SIGNING_KEY_FILE to its mounted Secret instead). See docker-entrypoint.sh.
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /keys && chown 10001:10001 /keys && chmod 700 /keys
# HOME for tools that write under it (gunicorn's control socket is off in its config,
# so a read-only root filesystem works too). The multiprocess metrics directory is on
# /dev/shm, a tmpfs in Docker, podman and Kubernetes alike; gunicorn's config wipes
# and recreates it at start.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/predictor \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PREDICTOR_BIND=0.0.0.0:8000 \
    PREDICTOR_MODEL_STORE=/models \
    PREDICTOR_SIGNING_KEY_FILE=/keys/signing.key \
    PROMETHEUS_MULTIPROC_DIR=/dev/shm/predictor-metrics
# A new named volume starts as a copy of the demo models; mount a store over it to serve yours.
VOLUME ["/models", "/keys"]
USER 10001:10001
WORKDIR /home/predictor
EXPOSE 8000 8001
# Ready = models loaded and not draining. Python, not curl: the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('PREDICTOR_BIND', ':8000').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2)"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["gunicorn", "-c", "python:service.gunicorn_conf", "service.wsgi:app"]
