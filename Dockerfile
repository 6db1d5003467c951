# syntax=docker/dockerfile:1
# The RT-QIS image: every `rtqis` command (producer, worker, sink, dashboard, topics) of docker-compose.yml.
#   docker build -t rtqis:0.1.0 .        (docker compose up --build does it)
# Build stage: a venv with the runtime pins of requirements.lock (hash-checked; no dev extras) and the
# rtqis package. Runtime stage: that venv on a clean slim Python, run as a non-root user.
# Validated statically (tests/test_deploy.py): no Docker engine on the machines that wrote it.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY deploy/lockfile.py deploy/lockfile.py
# the dependencies first (a layer that changes only with the lock): the runtime subset, every hash checked
RUN python -m venv /opt/rtqis \
    && python deploy/lockfile.py requirements.lock pyproject.toml > /tmp/runtime.lock \
    && /opt/rtqis/bin/pip install --require-hashes -r /tmp/runtime.lock
COPY rtqis rtqis
# the project itself, without touching the pinned dependencies
RUN /opt/rtqis/bin/pip install --no-deps . && /opt/rtqis/bin/rtqis --version

FROM ${PYTHON_IMAGE} AS runtime
# uid 10001 = deploy/compose.py RTQIS_UID; /data is the RTQIS_DATA_DIR volume, /tmp/rtqis-10001 the
# sink's private reader-socket directory (mode 0700), a volume shared with the dashboard
RUN groupadd --system --gid 10001 rtqis \
    && useradd --system --uid 10001 --gid rtqis --home-dir /data --no-create-home --shell /usr/sbin/nologin rtqis \
    && mkdir -p /data /tmp/rtqis-10001 \
    && chown rtqis:rtqis /data /tmp/rtqis-10001 \
    && chmod 0700 /tmp/rtqis-10001
COPY --from=build /opt/rtqis /opt/rtqis
ENV PATH=/opt/rtqis/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RTQIS_DATA_DIR=/data
USER rtqis
WORKDIR /data
ENTRYPOINT ["rtqis"]
CMD ["--help"]
