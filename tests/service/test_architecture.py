"""The import graph's rules, checked on every run: the project package wires the apps,
rollout and statebag are peers (neither imports the other), keys, audit and core sit below
them, the SDK at the bottom imports none of the service's frameworks, and no modules import
each other in a cycle. The contracts are in pyproject.toml ([tool.importlinter])."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts__all_kept():
    done = lint_imports()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout
