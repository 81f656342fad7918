"""docker-compose.yml describes the distributed stack, configured only by the environment."""

import json
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
    "APP_SECRET_KEY",
)
SECRETS_ENV = {
    "SECRET_KEY": "x" * 50,
    "POSTGRES_PASSWORD": "p",
    "AWS_SECRET_ACCESS_KEY": "app-secret",
    "MINIO_ROOT_PASSWORD": "root-secret",
}


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
    env.update(SECRETS_ENV)
    done = subprocess.run([*command, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def resolved_config(**env):
    """The configuration compose builds from the file and ``env`` (what it would run)."""
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", **SECRETS_ENV, **env}
    done = subprocess.run(
        [*compose_command(), "config"], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def published(service):
    """(host address, host port) of each port a resolved service publishes."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # compose v2: long syntax
            found.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
        else:  # compose v1: "host_ip:published:target/proto"
            parts = str(port).split("/")[0].split(":")
            found.append((parts[0] if len(parts) == 3 else "0.0.0.0", int(parts[-2])))
    return found


def test_compose__published_ports__loopback_unless_bind_address_says_otherwise():
    services = resolved_config()["services"]
    ports = {name: published(service) for name, service in services.items() if published(service)}
    assert ports == {"web": [("127.0.0.1", 8000)], "minio": [("127.0.0.1", 9001)]}
    everywhere = resolved_config(BIND_ADDRESS="0.0.0.0")["services"]
    assert published(everywhere["web"]) == [("0.0.0.0", 8000)]


def test_compose__app_credentials__a_scoped_key_never_minio_root():
    services = resolved_config()["services"]
    root = services["minio"]["environment"]
    init = services["minio-init"]["environment"]
    for name in ("web", "worker", "beat", "migrate"):
        app = services[name]["environment"]
        assert app["AWS_SECRET_ACCESS_KEY"] == "app-secret" != root["MINIO_ROOT_PASSWORD"]
        assert app["AWS_ACCESS_KEY_ID"] != root["MINIO_ROOT_USER"]
        assert (init["APP_ACCESS_KEY"], init["APP_SECRET_KEY"]) == (
            app["AWS_ACCESS_KEY_ID"],
            app["AWS_SECRET_ACCESS_KEY"],
        )
        assert not any("MINIO_ROOT" in key for key in app)
    assert (init["MINIO_ROOT_USER"], init["MINIO_ROOT_PASSWORD"]) == (
        root["MINIO_ROOT_USER"],
        root["MINIO_ROOT_PASSWORD"],
    )


def test_compose__minio_init__app_policy_covers_the_bucket_only(compose):
    script = compose["services"]["minio-init"]["entrypoint"][-1].replace("$$", "$")
    policy_text = script.split("<<POLICY\n", 1)[1].split("\nPOLICY\n", 1)[0]
    policy = json.loads(policy_text.replace("$BUCKET", "the-bucket"))
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert resources == {"arn:aws:s3:::the-bucket", "arn:aws:s3:::the-bucket/*"}
    assert all(statement["Effect"] == "Allow" for statement in policy["Statement"])
    assert actions == {
        "s3:GetBucketLocation",
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    }
    assert 'mc admin user add local "$APP_ACCESS_KEY" "$APP_SECRET_KEY"' in script
    assert 'mc admin policy attach local analemma-app --user "$APP_ACCESS_KEY"' in script


def test_compose__worker__consumes_the_queues_the_settings_route_to(compose):
    command = compose["services"]["worker"]["command"]
    assert "-Q" not in command and not any("GC_DLQ_URL" in part for part in command)
