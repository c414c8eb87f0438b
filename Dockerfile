# One image, several commands: the gateway (the default), the monolith, the search service
# and the CDC bridge are all `strangler ...` (see docker-compose.yml for each one's command).
#
#   docker build -t strangler:dev .
#   docker run --rm -p 8080:8080 strangler:dev      # the gateway on routes.yaml, embedded policy
#
# Two stages: the first installs the project (not editable) and its dependencies into a
# virtualenv; the second copies only that virtualenv onto a clean slim base, so pip, its
# caches and the source tree stay out of the image. Every dependency ships manylinux wheels
# (regopy needs glibc >= 2.34: bookworm has 2.36), so no compiler is needed.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/strangler
WORKDIR /src
# pyproject.toml names README.md as the readme: setuptools reads it while building.
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
COPY common/ common/
COPY cli/ cli/
COPY demo/ demo/
COPY legacy_monolith/ legacy_monolith/
COPY new_services/ new_services/
COPY cdc/ cdc/
COPY bench/ bench/
RUN /opt/strangler/bin/pip install . \
    && /opt/strangler/bin/strangler --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="strangler" \
      org.opencontainers.image.description="A strangler-fig migration gateway, its bundled monolith, search service and CDC bridge" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/strangler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 strangler \
    && useradd --system --uid 10001 --gid strangler --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin strangler
COPY --from=build /opt/strangler /opt/strangler
WORKDIR /app
# The same layout as the repository, so relative paths in routes files resolve the same way
# here and in a checkout: routes.yaml -> policies/, deploy/routes.compose.yaml -> ../policies.
# The policies are baked in for the embedded engine; compose's OPA mounts the repository's.
COPY policies/ policies/
COPY routes.yaml ./
COPY deploy/routes.compose.yaml deploy/
# var/: SQLite defaults (var/legacy.db, var/search.db, var/shadow.db) and the CDC bridge's
# status file, relative to the working directory. The only place the process writes.
RUN mkdir var && chown strangler:strangler var
USER strangler:strangler
EXPOSE 8080
# The gateway's liveness URL (it stays open to load balancers whatever the policy says);
# compose and Kubernetes override the check for the other commands (/health on their port).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_strangler/health', timeout=2)"]
# The routes file comes from STRANGLER_ROUTES (default routes.yaml, the embedded policy).
CMD ["strangler", "gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
