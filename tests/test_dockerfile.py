"""The container image, as far as it can be checked without a Docker engine: the Dockerfile's
stages, user and entrypoint, and that everything it copies and runs exists. The processes the
entrypoint starts are run for real in tests/test_production.py."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list] = {}
    current = None
    for keyword, argument in _instructions():
        if keyword.upper() == "FROM":
            current = argument.split()[-1]
            stages[current] = []
        elif current is not None:
            stages[current].append((keyword.upper(), argument))
    return stages


def _arg_default(name: str) -> str:
    for keyword, argument in _instructions():
        if keyword.upper() == "ARG" and argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}")


def test_multi_stage_build_on_python_slim_with_a_clean_runtime_stage():
    stages = _stages()
    assert list(stages) == ["build", "runtime"]
    assert _arg_default("PYTHON_IMAGE") == "python:3.11-slim"
    froms = [argument for keyword, argument in _instructions() if keyword.upper() == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    runtime_runs = " ".join(argument for keyword, argument in stages["runtime"] if keyword == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert tool not in runtime_runs, f"the runtime stage must not install or build ({tool})"
    copies_from_build = [a for k, a in stages["runtime"] if k == "COPY" and a.startswith("--from=build")]
    assert copies_from_build == ["--from=build /opt/venv /opt/venv"]


def test_runs_as_a_numeric_non_root_user():
    users = [argument for keyword, argument in _stages()["runtime"] if keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    # USER comes after every instruction that needs root.
    keywords = [keyword for keyword, _ in _stages()["runtime"]]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_everything_copied_exists_and_is_in_the_build_context():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for stage in _stages().values():
        for keyword, argument in stage:
            if keyword == "COPY" and not argument.startswith("--from"):
                sources += argument.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{source} is in .dockerignore"
    # Every package the project ships is copied into the image.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if any(fnmatch.fnmatch(path.parent.name, pattern) for pattern in patterns)
    }
    assert packages <= set(sources)


def test_entrypoint_roles_are_real_commands():
    entrypoint = [a for k, a in _stages()["runtime"] if k == "ENTRYPOINT"]
    command = [a for k, a in _stages()["runtime"] if k == "CMD"]
    assert entrypoint == ['["/app/deploy/entrypoint.sh"]'] and command == ['["http"]']
    script = ROOT / "deploy" / "entrypoint.sh"
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    for role in ("http", "grpc", "migrate", "all-in-one"):
        assert re.search(rf"^\s+{re.escape(role)}\)", text, re.MULTILINE), role
    used = set(re.findall(r"\"\$PYTHON\" manage\.py (\w+)", text))
    out = subprocess.run(
        [sys.executable, "manage.py", "help", "--commands"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert used == {"serve_http", "serve_grpc", "check", "migrate", "migrate_clickhouse", "serve"}
    assert used <= set(out.stdout.split())


def test_image_settings_and_ports_match_the_code():
    env = " ".join(a for k, a in _stages()["runtime"] if k == "ENV")
    module = re.search(r"DJANGO_SETTINGS_MODULE=(\S+)", env).group(1)
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # the root filesystem is read-only in the chart
    exposed = {int(port) for k, a in _stages()["runtime"] if k == "EXPOSE" for port in a.split()}
    assert exposed == {4317, 4318, 9464}
