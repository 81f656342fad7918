import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True, text=True
    )


def test_production_settings__check_deploy__no_warnings(tmp_path):
    done = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="analemma.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="statebag.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        ANALEMMA_VAR_DIR=str(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_production_settings__missing_secret_key__refuses_to_start(tmp_path):
    done = run_manage(
        "check",
        DJANGO_SETTINGS_MODULE="analemma.settings.production",
        ALLOWED_HOSTS="statebag.example.com",
        ANALEMMA_VAR_DIR=str(tmp_path),
    )
    assert done.returncode != 0
    assert "SECRET_KEY must be set" in done.stderr


def test_bootstrap_local__production_settings__refused(tmp_path):
    done = run_manage(
        "bootstrap_local",
        DJANGO_SETTINGS_MODULE="analemma.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="statebag.example.com",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        ANALEMMA_VAR_DIR=str(tmp_path),
    )
    assert done.returncode != 0
    assert "embedded" in done.stderr


def test_models__no_migration_missing():
    done = run_manage(
        "makemigrations", "--check", "--dry-run", DJANGO_SETTINGS_MODULE="analemma.settings.test"
    )
    assert done.returncode == 0, done.stdout + done.stderr
