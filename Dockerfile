# syntax=docker/dockerfile:1
# The operator image; it also serves the registry pods' authn sidecar (`registry-operator authn-server`).
# Not buildable on the project's CI machines (no Docker engine there); `make image` builds it elsewhere.
# For releases, pin the base image by digest as well (`python:3.11.11-slim-bookworm@sha256:...`).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY registry_operator ./registry_operator
# Non-editable install, then byte-compile: the runtime root filesystem is read-only.
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="registry-operator" \
      org.opencontainers.image.description="In-cluster image registries with rotating push/pull credentials"
# Same path as in the build stage so the console scripts' shebangs stay valid.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric non-root user, so runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["registry-operator"]
CMD ["run"]
