"""docker-compose.yml describes the distributed stack, configured only by the environment."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAMES = (
    "SECRET_KEY",
    "POSTGRES_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "MINIO_ROOT_PASSWORD",
    "MINIO_PASSWORD",
)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose__services__whole_stack_present(compose):
    services = compose["services"]
    assert {"postgres", "redis", "minio", "minio-init", "migrate", "web", "worker", "beat"} <= set(services)
    assert "gunicorn" in services["web"]["command"]
    assert "worker" in services["worker"]["command"] and "beat" in services["beat"]["command"]
    assert "django_celery_beat.schedulers:DatabaseScheduler" in services["beat"]["command"]
    assert "mc mb" in " ".join(services["minio-init"]["entrypoint"])


def test_compose__secrets__only_from_environment(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key in SECRET_NAMES:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (
                    f"{name}.{key} must come from the environment"
                )


def test_compose__app_services__production_settings_and_real_services(compose):
    for name in ("web", "worker", "beat", "migrate"):
        env = compose["services"][name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "analemma.settings.production"
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["AWS_S3_ENDPOINT_URL"].endswith("minio:9000}")


def compose_command():
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither 'docker compose' nor docker-compose is installed: run scripts/ensure-services.sh")


def test_compose__compose_config__accepts_it_and_requires_the_secrets():
    command = compose_command()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    missing = subprocess.run([*command, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    output = missing.stderr + missing.stdout
    assert missing.returncode != 0
    assert any(
        f"set {name}" in output for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY")
    )
    env.update(SECRET_KEY="x" * 50, POSTGRES_PASSWORD="p", AWS_SECRET_ACCESS_KEY="s")
    done = subprocess.run([*command, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
