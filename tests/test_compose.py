"""The real stack's files agree with the code: docker-compose.yml, deploy/, the Dockerfile.

No Docker engine runs here, so nothing is started: `docker-compose config` validates the
compose file, and the rest reads the files and checks them against the code they configure:
the gateway's routes parser, the CDC mapping, the Rego package, the environment variables
the Python sources read, the ports the commands listen on.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cdc import mapping as cdc_mapping
from gateway.config import table as config
from gateway.observe.admin import ADMIN_HEALTH

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE_ROUTES = DEPLOY / "routes.compose.yaml"
REGISTRATION = DEPLOY / "debezium" / "legacy-postgres.json"
K8S = DEPLOY / "k8s"
IMAGE_WORKDIR = PurePosixPath("/app")  # the Dockerfile keeps the repository's layout there
CODE = ("gateway", "cdc", "legacy_monolith", "new_services")

# Environment variables third-party images read themselves (their own documented settings),
# by image repository. Anything else a service sets must be read by our code.
IMAGE_VARIABLES: dict[str, set[str]] = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    # apache/kafka turns every KAFKA_* into a server property; CLUSTER_ID formats the log dirs
    "apache/kafka": {"CLUSTER_ID", "KAFKA_*"},
    # Debezium's entrypoint: these names, and CONNECT_* as Connect worker properties
    "quay.io/debezium/connect": {
        "BOOTSTRAP_SERVERS",
        "GROUP_ID",
        "CONFIG_STORAGE_TOPIC",
        "OFFSET_STORAGE_TOPIC",
        "STATUS_STORAGE_TOPIC",
        "CONNECT_*",
    },
    "openpolicyagent/opa": set(),
    "redis": set(),
    "curlimages/curl": set(),
}

_READS = re.compile(
    r"""\b(?:environ|env|getenv)\b(?:\.get)?\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|\benviron\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)
_PORT = re.compile(r"--port[= ](\d+)")
_ENV_PLACEHOLDER = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


# --- reading the files ------------------------------------------------------------------------


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose_file()["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: _interpolate(str(value)) for name, value in env.items()}


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with nothing set in the environment: the default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return command if isinstance(command, str) else shlex.join(str(part) for part in command)


def listen_port(service: dict[str, Any]) -> int:
    ports = _PORT.findall(command_text(service))
    assert len(ports) == 1, f"expected one --port in {command_text(service)!r}"
    return int(ports[0])


def image_repository(service: dict[str, Any]) -> str:
    return str(service["image"]).rsplit(":", 1)[0]


def is_ours(service: dict[str, Any]) -> bool:
    return "build" in service


def rule_for(service: dict[str, Any], other: str) -> str:
    """The depends_on condition `service` waits for on `other` ("None" when it does not)."""
    return str((service.get("depends_on") or {}).get(other, {}).get("condition"))


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    mounts = []
    for volume in service.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((ROOT / source).resolve(), PurePosixPath(target)))
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a path in a container comes from: a bind mount, else (our image) the checkout."""
    path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    if is_ours(service) and IMAGE_WORKDIR in path.parents:
        return ROOT / path.relative_to(IMAGE_WORKDIR)
    return None


def code_reads() -> set[str]:
    """Environment variable names the project's Python sources read."""
    names = set()
    for package in CODE:
        for source in (ROOT / package).rglob("*.py"):
            for match in _READS.finditer(source.read_text()):
                names.add(match.group(1) or match.group(2))
    return names


def secret_envs(routes: Path) -> set[str]:
    """Variables a routes file names in `secret_env:` (read by name at load time)."""
    document = yaml.safe_load(routes.read_text())
    keys = (document.get("auth") or {}).get("keys") or []
    return {key["secret_env"] for key in keys if "secret_env" in key}


def registration() -> dict[str, str]:
    data: dict[str, str] = json.loads(REGISTRATION.read_text())
    return data


def gateway_routes() -> Path:
    gateway = services()["gateway"]
    path = host_path(gateway, environment(gateway)["STRANGLER_ROUTES"])
    assert path is not None, "STRANGLER_ROUTES is neither mounted nor in the image"
    return path


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


# --- the compose file -------------------------------------------------------------------------


# The file alone, and with the override `strangler demo --against` documents.
@pytest.mark.parametrize(
    "files", [(COMPOSE,), (COMPOSE, DEPLOY / "compose.demo.yaml")], ids=["alone", "demo"]
)
def test_docker_compose_accepts_the_file(files: tuple[Path, ...]) -> None:
    if shutil.which("docker-compose") is None:
        reason = "docker-compose is not installed (Debian: apt-get install docker-compose)"
        if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (STRANGLER_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    result = subprocess.run(
        ["docker-compose", *(arg for file in files for arg in ("-f", str(file))), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_has_every_piece() -> None:
    expected = {
        "postgres-legacy",
        "postgres-search",
        "kafka",
        "connect",
        "debezium-register",
        "opa",
        "redis",
        "monolith",
        "search",
        "cdc",
        "gateway",
    }
    assert expected <= set(services())


def test_third_party_images_are_pinned() -> None:
    for name, service in services().items():
        if is_ours(service):
            continue
        image = str(service["image"])
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: pin {image!r} to a version"


def test_postgres_legacy_runs_with_logical_wal() -> None:
    command = command_text(services()["postgres-legacy"])
    assert "wal_level=logical" in command.split()


def test_start_order_uses_conditions_that_can_be_met() -> None:
    stack = services()
    for name, service in stack.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        for other, rule in depends.items():
            assert other in stack, f"{name} depends on unknown service {other!r}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in stack[other], f"{name} waits for {other}'s health check"
            else:
                assert condition == "service_completed_successfully", f"{name}: {condition}"
                assert str(stack[other].get("restart", "no")) == "no", f"{other} is one-shot"


@pytest.mark.parametrize("name", ["monolith", "search", "gateway"])
def test_health_checks_hit_the_port_the_command_listens_on(name: str) -> None:
    service = services()[name]
    check = " ".join(service["healthcheck"]["test"])
    path = ADMIN_HEALTH if name == "gateway" else "/health"
    assert f"http://127.0.0.1:{listen_port(service)}{path}'" in check


def test_the_gateway_publishes_the_port_it_listens_on() -> None:
    gateway = services()["gateway"]
    published = [str(p).rsplit(":", 1)[-1] for p in gateway["ports"]]
    assert published == [str(listen_port(gateway))]


def test_every_variable_a_service_sets_is_read_by_someone() -> None:
    read = code_reads()
    # the regex must see the settings modules, or everything below would pass vacuously
    assert {"STRANGLER_ROUTES", "STRANGLER_ENV", "DATABASE_URL", "SEARCH_DATABASE_URL"} <= read
    assert {"CDC_BOOTSTRAP_SERVERS", "CDC_GROUP_ID", "CDC_MAPPING"} <= read
    placeholders = set(_ENV_PLACEHOLDER.findall(REGISTRATION.read_text()))
    unread = []
    for name, service in services().items():
        if is_ours(service):
            allowed = read | (secret_envs(gateway_routes()) if name == "gateway" else set())
            unread += [f"{name}: {var}" for var in environment(service) if var not in allowed]
            continue
        repository = image_repository(service)
        assert repository in IMAGE_VARIABLES, f"{name}: no variable allowlist for {repository}"
        patterns = IMAGE_VARIABLES[repository]
        if repository == "quay.io/debezium/connect":
            patterns = patterns | placeholders  # ${env:NAME} in the connector's config
        unread += [
            f"{name}: {var}"
            for var in environment(service)
            if not any(fnmatch.fnmatchcase(var, pattern) for pattern in patterns)
        ]
    assert not unread, "set but read by nothing: " + ", ".join(unread)


def test_services_share_the_databases_they_must_share() -> None:
    stack = services()
    search_url = environment(stack["search"])["SEARCH_DATABASE_URL"]
    assert environment(stack["cdc"])["SEARCH_DATABASE_URL"] == search_url
    for name, variable in (("monolith", "DATABASE_URL"), ("search", "SEARCH_DATABASE_URL")):
        url = urlsplit(environment(stack[name])[variable])
        database = stack[str(url.hostname)]
        db_env = environment(database)
        assert image_repository(database) == "postgres"
        assert (url.username, url.password) == (
            db_env["POSTGRES_USER"],
            db_env["POSTGRES_PASSWORD"],
        )
        assert url.path.lstrip("/") == db_env["POSTGRES_DB"]
        assert rule_for(stack[name], str(url.hostname)) == "service_healthy"


# --- the gateway's routes file ----------------------------------------------------------------


def test_the_gateway_serves_the_compose_routes_file() -> None:
    assert gateway_routes() == COMPOSE_ROUTES


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The gateway container's environment (the dev key's secret among it)."""
    env = environment(services()["gateway"])
    monkeypatch.delenv("STRANGLER_ENV", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_the_compose_routes_file_loads(gateway_env: dict[str, str]) -> None:
    assert "STRANGLER_ENV" not in gateway_env  # a dev stack: `strangler token` works
    table = config.load(COMPOSE_ROUTES)
    assert [key.id for key in table.auth.keys if key.dev] == ["dev"]


def test_every_upstream_is_a_service_on_the_port_it_listens_on(gateway_env: dict[str, str]) -> None:
    stack = services()
    table = config.load(COMPOSE_ROUTES)
    for upstream in table.upstreams.values():
        _, host, port = upstream.origin
        assert host in stack, f"upstream {upstream.name}: {host!r} is not a compose service"
        assert port == listen_port(stack[host]), f"upstream {upstream.name}: port {port}"
        assert rule_for(stack["gateway"], host) == "service_healthy"


def test_the_shared_store_is_the_redis_service(gateway_env: dict[str, str]) -> None:
    stack = services()
    store = config.load(COMPOSE_ROUTES).store
    assert store.backend == "redis" and store.url is not None
    url = urlsplit(store.url)
    assert image_repository(stack[str(url.hostname)]) == "redis"
    assert url.port == 6379 and "--port" not in command_text(stack[str(url.hostname)])
    assert rule_for(stack["gateway"], str(url.hostname)) == "service_healthy"


def test_the_policy_engine_is_the_opa_service_with_the_gateways_package(
    gateway_env: dict[str, str],
) -> None:
    stack = services()
    authz = config.load(COMPOSE_ROUTES).authz
    assert authz is not None and authz.engine == "opa" and authz.url is not None
    url = urlsplit(authz.url)
    opa = stack[str(url.hostname)]
    assert image_repository(opa) == "openpolicyagent/opa"
    command = [str(part) for part in opa["command"]]
    assert command[:2] == ["run", "--server"]
    assert command[command.index("--addr") + 1] == f":{url.port}"
    assert "decision_logs.console=true" in command
    # OPA loads a mounted directory that is the repository's policies/ ...
    loaded = [
        source for source, target in bind_mounts(opa) if str(target) in command and source.is_dir()
    ]
    assert loaded == [ROOT / "policies"]
    # ... and that directory defines the package the gateway asks for
    packages = set()
    for rego in loaded[0].glob("*.rego"):
        packages.update(re.findall(r"^package\s+([\w.]+)", rego.read_text(), re.MULTILINE))
    assert authz.package.replace("/", ".") in packages
    assert rule_for(stack["gateway"], str(url.hostname)) == "service_healthy"


# --- Debezium and the CDC bridge --------------------------------------------------------------


def cdc_mapping_in_use() -> cdc_mapping.Mapping:
    variable = environment(services()["cdc"]).get("CDC_MAPPING")
    path = host_path(services()["cdc"], variable) if variable else cdc_mapping.DEFAULT_PATH
    assert path is not None, f"CDC_MAPPING={variable} is neither mounted nor in the image"
    return cdc_mapping.load(path)


def test_the_connector_captures_the_topics_the_bridge_maps() -> None:
    mapping = cdc_mapping_in_use()
    connector = registration()
    assert connector["topic.prefix"] == mapping.topic_prefix
    captured = {t.strip() for t in connector["table.include.list"].split(",")}
    # a topic is <prefix>.<schema>.<table>; the include list names <schema>.<table>
    assert captured == {topic.removeprefix(f"{mapping.topic_prefix}.") for topic in mapping.topics}


def test_the_connector_streams_the_logical_wal_in_json() -> None:
    connector = registration()
    assert connector["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert connector["plugin.name"] == "pgoutput"
    assert connector["slot.name"] and connector["publication.name"]
    for side in ("key", "value"):  # the bridge parses JsonConverter documents (cdc/envelope.py)
        assert connector[f"{side}.converter"] == "org.apache.kafka.connect.json.JsonConverter"
        assert connector[f"{side}.converter.schemas.enable"] == "true"


def test_the_connector_reads_the_monoliths_database() -> None:
    stack = services()
    connector = registration()
    database = stack[connector["database.hostname"]]
    assert "wal_level=logical" in command_text(database).split()
    db_env = environment(database)
    assert connector["database.user"] == db_env["POSTGRES_USER"]
    assert connector["database.dbname"] == db_env["POSTGRES_DB"]
    monolith = urlsplit(environment(stack["monolith"])["DATABASE_URL"])
    assert (monolith.hostname, monolith.path.lstrip("/")) == (
        connector["database.hostname"],
        connector["database.dbname"],
    )


def test_the_connect_service_resolves_the_registrations_placeholders() -> None:
    connect = services()["connect"]
    env = environment(connect)
    assert "env" in env["CONNECT_CONFIG_PROVIDERS"].split(",")
    for name in _ENV_PLACEHOLDER.findall(REGISTRATION.read_text()):
        assert name in env, f"${{env:{name}}} is not set in the connect service"
    assert (
        env.get("LEGACY_DB_PASSWORD")
        == environment(services()["postgres-legacy"])["POSTGRES_PASSWORD"]
    )


def test_the_registration_is_sent_to_connect() -> None:
    stack = services()
    register = stack["debezium-register"]
    command = [str(part) for part in register["command"]]
    data = command[command.index("--data") + 1].removeprefix("@")
    assert host_path(register, data) == REGISTRATION
    url = urlsplit(command[-1])
    assert image_repository(stack[str(url.hostname)]) == "quay.io/debezium/connect"
    assert url.path.startswith("/connectors/") and url.path.endswith("/config")
    assert command[command.index("-X") + 1] == "PUT"  # create or update: idempotent
    # the publication names the captured tables: they must exist, so the monolith migrated
    assert rule_for(register, "monolith") == "service_healthy"


def test_the_bridge_consumes_from_the_broker_after_registration() -> None:
    stack = services()
    cdc = stack["cdc"]
    host, _, port = environment(cdc)["CDC_BOOTSTRAP_SERVERS"].partition(":")
    kafka = environment(stack[host])
    assert f"PLAINTEXT://{host}:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert environment(stack["connect"])["BOOTSTRAP_SERVERS"] == f"{host}:{port}"
    assert rule_for(cdc, "debezium-register") == "service_completed_successfully"
    assert rule_for(cdc, "search") == "service_healthy"  # migrated: the target tables exist


# --- the image ---------------------------------------------------------------------------------


def test_the_image_runs_as_a_user_with_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert f"http://127.0.0.1:8080{ADMIN_HEALTH}" in text  # the default command's port
    assert 'CMD ["strangler", "gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]' in text
    # the layout compose relies on: /app/deploy/routes.compose.yaml next to /app/policies
    assert "WORKDIR /app" in lines
    assert {"COPY policies/ policies/", "COPY deploy/routes.compose.yaml deploy/"} <= set(lines)


# --- Kubernetes --------------------------------------------------------------------------------


def test_k8s_manifests_have_the_expected_kinds() -> None:
    documents = [document for _, document in k8s_documents()]
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(document)
        assert document["metadata"].get("name")
    kinds = {document["kind"] for document in documents}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    names = {d["metadata"]["name"] for d in documents if d["kind"] == "Deployment"}
    assert {"gateway", "monolith", "search", "cdc"} <= names


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_the_gateway_deployment_runs_several_replicas() -> None:
    assert k8s("Deployment")["gateway"]["spec"]["replicas"] > 1


def test_each_service_selects_a_deployment_and_a_named_port() -> None:
    deployments = k8s("Deployment")
    for name, service in k8s("Service").items():
        selector = service["spec"]["selector"]
        matches = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, f"Service {name} selects {len(matches)} deployments"
        ports = {p["name"] for c in containers(matches[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no port {port['targetPort']!r}"


def test_the_routes_config_map_parses_and_points_at_the_services() -> None:
    config_map = k8s("ConfigMap")["strangler-routes"]
    table = config.parse(config_map["data"]["routes.yaml"].encode(), "k8s/strangler-routes")
    services_by_name = k8s("Service")
    for upstream in table.upstreams.values():
        _, host, port = upstream.origin
        assert host in services_by_name, f"upstream {upstream.name}: no Service {host!r}"
        assert port in {p["port"] for p in services_by_name[host]["spec"]["ports"]}
    assert not any(key.dev for key in table.auth.keys)  # no development keys in a cluster


def test_the_gateway_pods_read_the_config_map_and_ask_their_sidecar() -> None:
    deployment = k8s("Deployment")["gateway"]
    pod = deployment["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["STRANGLER_ENV"] == "production"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in gateway["volumeMounts"] if "configMap" in volumes[m["name"]])
    assert volumes[mount["name"]]["configMap"]["name"] == "strangler-routes"
    assert env["STRANGLER_ROUTES"] == f"{mount['mountPath']}/routes.yaml"
    table = config.parse(
        k8s("ConfigMap")["strangler-routes"]["data"]["routes.yaml"].encode(), "routes.yaml"
    )
    assert table.authz is not None and table.authz.url is not None
    opa = next(c for c in pod["containers"] if c["image"].startswith("openpolicyagent/opa:"))
    assert f"--addr={urlsplit(table.authz.url).netloc}" in opa["args"]


def test_k8s_containers_set_only_variables_the_code_reads() -> None:
    read = code_reads()
    for name, deployment in k8s("Deployment").items():
        for container in containers(deployment):
            if not container["image"].startswith("strangler:"):
                continue
            unread = {e["name"] for e in container.get("env", [])} - read
            assert not unread, f"{name}/{container['name']}: {sorted(unread)} read by nothing"
            command = shlex.join(container.get("command", []))
            for port in _PORT.findall(command):
                assert int(port) in {p["containerPort"] for p in container.get("ports", [])}
