# dispatch-pipeline: one image for every role of the deployment.
#   code location  dagster code-server start ... -p 4000          (default CMD)
#   webserver      dagster-webserver -h 0.0.0.0 -p 3000 -w /opt/dagster/app/workspace.yaml
#   daemon         dagster-daemon run
#   REST API       dispatch-pipeline serve --host 0.0.0.0 --port 8002
#   solver service dispatch-pipeline solver serve --address 0.0.0.0:7433
#   migrations     /opt/dagster/app/deploy/docker/migrate.sh
#   run workers    started by DockerRunLauncher / K8sRunLauncher with this same image
#
# Build: docker build -t dispatch-pipeline:latest .   (or `docker-compose build`)
# Written for the classic builder as well as BuildKit (no heredocs, no cache mounts).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dagster and its integration libraries are versioned together (1.x <-> 0.(x+16)); keep these two
# in step, and in step with the Helm chart version in deploy/helm/values.yaml.
ARG DAGSTER_VERSION=1.13.27
ARG DAGSTER_LIBS_VERSION=0.29.27

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them; at the
# versions the tests ran against (constraints.txt, `make constraints`).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
        "dagster==${DAGSTER_VERSION}" \
        "dagster-webserver==${DAGSTER_VERSION}" \
        "dagster-postgres==${DAGSTER_LIBS_VERSION}" \
        "dagster-docker==${DAGSTER_LIBS_VERSION}" \
        "dagster-k8s==${DAGSTER_LIBS_VERSION}"

# Then the package itself (.dockerignore keeps the context to what is needed).
COPY . .
RUN pip install --no-deps . \
    && pip check

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# CBC (the `cbc` executable) as second MILP solver; HiGHS comes with the highspy wheel.
# tini reaps the subprocesses Dagster starts and forwards signals. Unpinned on purpose: the
# distribution's stable release only gets fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends coinor-cbc tini \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin dagster

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MPLCONFIGDIR=/tmp/matplotlib \
    DAGSTER_PG_PORT=5432 \
    DAGSTER_MAX_CONCURRENT_RUNS=8

WORKDIR /opt/dagster/app

# Instance config (DockerRunLauncher variant), workspace for the webserver/daemon, migrate script.
COPY dagster_home/dagster.docker.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/workspace.docker.yaml /opt/dagster/app/workspace.yaml
COPY deploy/docker/ /opt/dagster/app/deploy/docker/

# DAGSTER_HOME must be writable (history, logs); storage/ is where the shared volume is mounted
# in Compose, created here so a new named volume takes the dagster user's ownership.
RUN mkdir -p /opt/dagster/dagster_home/storage \
    && chown -R dagster:dagster /opt/dagster/dagster_home \
    && chmod 0755 /opt/dagster/app/deploy/docker/migrate.sh \
    && cbc -quit >/dev/null \
    && python -c "import highspy, dispatch_pipeline, dagster_postgres, dagster_docker, dagster_k8s"

# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001

EXPOSE 4000 3000 8002 7433

ENTRYPOINT ["tini", "--"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "dispatch_pipeline.definitions", "-a", "defs", "--location-name", "dispatch_pipeline"]
