# syntax=docker/dockerfile:1
# The image of eventmesh-health (`serve` in the cluster, `check`/`dump` as a job).
#
# Both stages use the same Python base, pinned by digest: replace the placeholder with the
# digest of the tag you vetted (`docker buildx imagetools inspect python:3.12-slim-bookworm`)
# and keep both lines equal (the runtime copies a virtualenv that links to this Python).
# The RUN commands of the build stage are the README's ("Container image"); the test
# tests/test_image.py holds the two to each other and runs them (offline) into a clean venv.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000

# --- build: wheels of the project and of every dependency, installed into a venv ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --wheel-dir /wheels /src
RUN python -m venv /opt/eventmesh-health
RUN /opt/eventmesh-health/bin/pip install --no-index --find-links /wheels eventmesh-health

# --- runtime: the venv alone, non-root, nothing that needs a shell -------------------------
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/eventmesh-health /opt/eventmesh-health
ENV PATH=/opt/eventmesh-health/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The numeric user of distroless' "nonroot", so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8080 8081
# Exec form: no shell runs, at start or later.
ENTRYPOINT ["/opt/eventmesh-health/bin/eventmesh-health"]
CMD ["serve"]
