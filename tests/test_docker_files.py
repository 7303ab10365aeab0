"""Dockerfile, docker-compose.yml, .dockerignore and .env.example, checked without Docker.

Static checks parse the files (docker-compose.yml with PyYAML) and hold them against
pyproject.toml, config.json and Freqtrade's own config schema. The integration tests run the real
Freqtrade CLI with the compose environment, and carry out the Dockerfile's COPY and RUN steps in a
throwaway virtualenv that stands in for the official image (see `test_dockerfile_install_steps`
for what that stand-in is, and is not).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "freqtradeorg/freqtrade"
USERDIR = "/freqtrade/user_data"  # the official image's WORKDIR is /freqtrade
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "CHAT_ID")
# What a user needs in .env for the compose file and the README to work.
REQUIRED_ENV = {
    "FREQTRADE__EXCHANGE__KEY",
    "FREQTRADE__EXCHANGE__SECRET",
    "GEMINI_API_KEY",
    "FREQTRADE__API_SERVER__ENABLED",
    "FREQTRADE__API_SERVER__USERNAME",
    "FREQTRADE__API_SERVER__PASSWORD",
    "FREQTRADE__API_SERVER__JWT_SECRET_KEY",
    "FREQTRADE__API_SERVER__WS_TOKEN",
    "FREQTRADE__TELEGRAM__ENABLED",
    "FREQTRADE__TELEGRAM__TOKEN",
    "FREQTRADE__TELEGRAM__CHAT_ID",
}


# --- readers ------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions, buffer = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        keyword, _, rest = (buffer + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a continued line"
    return instructions


def copies() -> list[tuple[list[str], str, list[str]]]:
    """(sources, destination, flags) of every COPY."""
    result = []
    for keyword, rest in dockerfile():
        if keyword == "COPY":
            words = shlex.split(rest)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            result.append((paths[:-1], paths[-1], flags))
    return result


def copy_destination(source: str) -> str:
    """Where a build-context path lands in the image (a directory's contents go into dest)."""
    for sources, dest, _ in copies():
        for src in sources:
            if src.rstrip("/") == source:
                if (ROOT / source).is_file() and dest.endswith("/"):
                    return dest + Path(source).name
                return dest.rstrip("/")
    raise AssertionError(f"the Dockerfile never copies {source}")


def shell_commands() -> list[list[str]]:
    """Every `&&`-separated command of every RUN, split like a shell would."""
    return [
        shlex.split(part)
        for keyword, rest in dockerfile()
        if keyword == "RUN"
        for part in rest.split("&&")
    ]


def pip_installs() -> list[tuple[set[str], dict[str, str], list[str]]]:
    """(flags, options with a value, positional arguments) of every `pip install`."""
    result = []
    for words in shell_commands():
        if words[:2] != ["pip", "install"]:
            continue
        flags, options, args = set(), {}, []
        rest = iter(words[2:])
        for word in rest:
            if word in ("--constraint", "-c"):
                options["--constraint"] = next(rest)
            elif word.startswith("-"):
                flags.add(word)
            else:
                args.append(word)
        result.append((flags, options, args))
    return result


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def shipped_config() -> dict[str, Any]:
    return json.loads((ROOT / "config.json").read_text())


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (the plain subset that .env.example uses)."""
    values = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line)
        assert match, f"{path.name}:{number}: not a plain KEY=VALUE line: {raw!r}"
        assert match[1] not in values, f"{path.name}:{number}: {match[1]} twice"
        values[match[1]] = match[2]
    return values


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML parses docker-compose.yml: add it to dev")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert list(compose["services"]) == ["freqtrade"]
    return compose["services"]["freqtrade"]


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    assert all(isinstance(v, str) for v in environment.values()), "quote environment values"
    return environment


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} must appear once in {argv}"
    return argv[argv.index(name) + 1]


def volumes(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (host path, mode) of the bind mounts (short syntax)."""
    result = {}
    for entry in service["volumes"]:
        host, container, *mode = entry.split(":")
        result[container] = (host, mode[0] if mode else "rw")
    return result


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_starts_from_the_pinned_official_image() -> None:
    froms = [rest for keyword, rest in dockerfile() if keyword == "FROM"]
    assert froms == [f"{IMAGE}:2026.9"]
    pins = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    (freqtrade,) = [r for r in pins if r.name == "freqtrade"]
    (spec,) = freqtrade.specifier
    assert spec.operator == "=="
    assert froms == [f"{IMAGE}:{spec.version}"], "image tag and pyproject pin must move together"


def test_dockerfile_copies_only_existing_sources_as_ftuser() -> None:
    instructions = dockerfile()
    assert ("USER", "ftuser") in instructions
    assert ("WORKDIR", "/freqtrade") in instructions
    assert not [k for k, _ in instructions if k in ("ADD", "ENTRYPOINT", "VOLUME")]
    copied = set()
    for sources, dest, flags in copies():
        assert flags == ["--chown=ftuser:ftuser"], "ftuser must own what it builds and runs"
        for src in sources:
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
            copied.add(src.rstrip("/"))
        # Freqtrade's own source (and pyproject.toml) live in /freqtrade: never build there.
        if "pyproject.toml" in sources:
            assert not dest.startswith("/freqtrade"), dest
    # The package (the build needs the readme pyproject.toml names), the strategy, the config.
    package = {"pyproject.toml", pyproject()["project"]["readme"], "llm_oracle", "bybit_emulator"}
    assert copied == package | {"strategies", "config.json"}
    assert copy_destination("config.json") == "/freqtrade/config.json"
    assert copy_destination("strategies") == "/freqtrade/strategies"


def test_dockerfile_installs_the_package_constrained_to_the_image() -> None:
    (install,) = pip_installs()
    flags, options, args = install
    assert {"--user", "--no-cache-dir"} <= flags, "the image's way: pip install --user"
    # The package with its dependencies from pyproject.toml (one list, no copy to drift)...
    assert args == [copy_destination("pyproject.toml").rsplit("/", 1)[0]]
    assert not flags & {"--no-deps", "-U", "--upgrade", "--force-reinstall", "--ignore-installed"}
    # ...constrained to every version already in the image, listed just before.
    constraints = options["--constraint"]
    assert ["pip", "list", "--format=freeze", ">", constraints] in shell_commands()


# --- .dockerignore, .env, .gitignore --------------------------------------------------------------


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_dockerfile_copies() -> None:
    for sources, _, _ in copies():
        for src in sources:
            files = [ROOT / src] if (ROOT / src).is_file() else (ROOT / src).rglob("*")
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if file.is_file() and "__pycache__" not in relative:
                    assert not dockerignore_excludes(relative), relative
    for secret_or_bulk in (
        ".env",
        ".venv/bin/python",
        ".git/HEAD",
        "user_data/oracle/journal.sqlite",
        "user_data/tradesv3.dryrun.sqlite",
        "user_data/logs/freqtrade.log",
        "user_data/backtest_results/.last_result.json",
        "user_data/data/bybit/futures/BTC_USDT_USDT-3m-futures.feather",
        "tests/test_docker_files.py",
        "llm_oracle/__pycache__/oracle.cpython-311.pyc",
        "strategies/__pycache__/GeminiOracleStrategy.cpython-311.pyc",
        "freqtrade_llm_oracle.egg-info/PKG-INFO",
        ".pytest_cache/README.md",
    ):
        assert dockerignore_excludes(secret_or_bulk), secret_or_bulk


def git(*args: str) -> subprocess.CompletedProcess[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_env_is_ignored_and_the_example_is_committed() -> None:
    assert git("check-ignore", "-q", ".env").returncode == 0, ".env must be git-ignored"
    assert git("ls-files", "--error-unmatch", ".env.example").returncode == 0
    assert git("ls-files", ".env").stdout == ""


def test_env_example_has_every_variable_and_no_secret() -> None:
    values = env_file(ROOT / ".env.example")
    assert set(values) >= REQUIRED_ENV
    for key, value in values.items():
        if any(word in key for word in SECRET_WORDS):
            assert value == "", f"{key} must be an empty placeholder in .env.example"
        else:
            assert value in ("true", "false", "freqtrader"), f"{key}={value!r}"
    # Copied unchanged, it fails closed: the API needs a JWT secret that is not there yet.
    assert values["FREQTRADE__API_SERVER__ENABLED"] == "true"


def schema_has(schema: dict[str, Any], path: list[str]) -> bool:
    node = schema
    for part in path:
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        properties = node.get("properties", {})
        if part not in properties:
            return False
        node = properties[part]
    return True


def test_every_freqtrade_variable_names_a_real_config_key(service: dict[str, Any]) -> None:
    """FREQTRADE__SECTION__KEY is silently ignored when misspelt: check each against the schema."""
    from freqtrade.config_schema.config_schema import CONF_SCHEMA

    names = set(env_file(ROOT / ".env.example")) | set(compose_environment(service))
    for name in sorted(n for n in names if n.startswith("FREQTRADE__")):
        path = [p.lower() for p in name.removeprefix("FREQTRADE__").split("__")]
        assert schema_has(CONF_SCHEMA, path), f"{name} is not a Freqtrade config key"


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_builds_the_dockerfile_and_reads_secrets_from_env(service: dict[str, Any]) -> None:
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert service["env_file"] in (".env", [".env"])
    assert service["restart"] == "unless-stopped"
    # No secret is written into the compose file itself.
    for key in compose_environment(service):
        assert not any(word in key for word in SECRET_WORDS), key


def test_api_is_published_on_the_host_loopback_only(service: dict[str, Any]) -> None:
    assert "network_mode" not in service, "host networking would bypass the loopback binding"
    assert service["ports"] == ["127.0.0.1:8080:8080"]
    port = shipped_config()["api_server"]["listen_port"]
    assert service["ports"][0].rsplit(":", 1)[1] == str(port)
    # Inside the container the API must listen on its interface to be reachable at all.
    environment = compose_environment(service)
    assert environment["FREQTRADE__API_SERVER__LISTEN_IP_ADDRESS"] == "0.0.0.0"


def test_user_data_and_config_are_mounted(service: dict[str, Any]) -> None:
    mounts = volumes(service)
    assert mounts[USERDIR] == ("./user_data", "rw")
    assert (ROOT / "user_data").is_dir()
    assert mounts[copy_destination("config.json")] == ("./config.json", "ro")
    assert set(mounts) == {USERDIR, copy_destination("config.json")}


def test_command_trades_dry_with_the_shipped_config_and_strategy(service: dict[str, Any]) -> None:
    argv = compose_command(service)
    assert argv[0] == "trade", "the image's entrypoint is freqtrade; the command is trade"
    assert option(argv, "--config") == copy_destination("config.json")
    config = shipped_config()
    assert option(argv, "--strategy") == config["strategy"]
    strategy_path = option(argv, "--strategy-path")
    assert strategy_path == copy_destination("strategies")
    source = (ROOT / "strategies" / f"{config['strategy']}.py").read_text()
    assert f"class {config['strategy']}(" in source
    # Everything the bot writes lands on the user_data volume: log, trade DB, oracle journal.
    assert option(argv, "--userdir") == USERDIR
    assert option(argv, "--logfile").startswith(USERDIR + "/")
    assert not Path(config["llm_oracle"]["journal_path"]).is_absolute()
    environment = compose_environment(service)
    assert "--db-url" not in argv, "the database is set next to FREQTRADE__DRY_RUN"
    assert environment["FREQTRADE__DB_URL"].startswith(f"sqlite:///{USERDIR}/")
    # Dry run twice over: the shipped config, and the compose file whatever the config says.
    assert config["dry_run"] is True
    assert environment["FREQTRADE__DRY_RUN"] == "true"
    assert environment["FREQTRADE__DB_URL"].endswith(".dryrun.sqlite")


class _Ping(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ok = self.path == "/api/v1/ping"
        body = b'{"status":"pong"}' if ok else b"{}"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ping_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_healthcheck_pings_the_api_with_nothing_but_python(
    service: dict[str, Any], ping_server: int
) -> None:
    check = service["healthcheck"]
    kind, program, *args = check["test"]
    assert (kind, program) == ("CMD", "python")
    code = " ".join(args[1:])
    url = "http://127.0.0.1:8080/api/v1/ping"
    assert args[0] == "-c" and url in code
    assert check["start_period"] and check["interval"] and check["retries"] >= 1

    def run(port: int, path: str = "/api/v1/ping") -> int:
        argv = [sys.executable, "-c", code.replace(url, f"http://127.0.0.1:{port}{path}")]
        # A configured proxy must not swallow the loopback check.
        env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    assert run(ping_server) == 0
    assert run(ping_server, "/api/v1/nothing") != 0  # a 404 is unhealthy
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    closed = server.server_address[1]
    server.server_close()
    assert run(closed) != 0  # nothing listening: unhealthy


# --- integration: the real Freqtrade CLI with the compose environment ----------------------------


FREQTRADE = Path(sys.executable).with_name("freqtrade")


def show_config(
    service: dict[str, Any], tmp_path: Path, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """`freqtrade show-config` with exactly what the container gets: .env.example, then the
    compose `environment:` (which wins in Docker Compose), and the mounted config.json."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREQTRADE__", "GEMINI_"))}
    env.update(env_file(ROOT / ".env.example"))
    env.update(overrides)
    env.update(compose_environment(service))
    (tmp_path / "user_data").mkdir(exist_ok=True)
    argv = [str(FREQTRADE), "show-config", "--config", str(ROOT / "config.json")]
    argv += ["--userdir", str(tmp_path / "user_data")]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.integration
def test_env_example_copied_unchanged_stops_startup(
    service: dict[str, Any], tmp_path: Path
) -> None:
    # Freqtrade validates the config as `trade` would, logs the error (and exits 0 here).
    run = show_config(service, tmp_path)
    assert "Configuration error: '' is too short" in run.stderr
    assert "['api_server']['jwt_secret_key']" in run.stderr
    assert "combined configuration" not in run.stdout


@pytest.mark.integration
def test_compose_environment_configures_freqtrade(service: dict[str, Any], tmp_path: Path) -> None:
    jwt = "test-only-jwt-secret-" + "x" * 24
    run = show_config(
        service,
        tmp_path,
        FREQTRADE__API_SERVER__PASSWORD="test-only-password",
        FREQTRADE__API_SERVER__JWT_SECRET_KEY=jwt,
        FREQTRADE__TELEGRAM__CHAT_ID="0123",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads(run.stdout[run.stdout.index("\n{") :])
    environment = compose_environment(service)
    assert config["dry_run"] is True
    assert config["db_url"] == environment["FREQTRADE__DB_URL"]
    api = config["api_server"]
    assert (api["enabled"], api["listen_ip_address"], api["listen_port"]) == (True, "0.0.0.0", 8080)
    assert config["telegram"]["enabled"] is False
    assert config["api_server"]["jwt_secret_key"] == jwt


# --- integration: the Dockerfile's steps in a stand-in for the official image ---------------------


def _installed(site: Path) -> dict[str, metadata.Distribution]:
    found = metadata.distributions(path=[str(site)])
    return {canonicalize_name(d.metadata["Name"]): d for d in found}


def _closure(requirements: list[str], installed: dict[str, metadata.Distribution]) -> set[str]:
    """Installed distributions that `requirements` pull in (markers evaluated, extras followed)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in [*req.extras, ""]:
            key = f"{name}[{wanted}]"
            if key in seen or name not in installed:
                continue
            seen.add(key)
            todo += [(Requirement(r), wanted) for r in installed[name].requires or []]
    return {key.split("[")[0] for key in seen}


def _files(dist: metadata.Distribution) -> list[Any]:
    """A distribution's files inside site-packages (scripts in ../bin left out)."""
    return [f for f in dist.files or [] if f.parts[0] != ".."]


def _link_layer(dists: set[str], installed: dict[str, Any], site: Path, target: Path) -> None:
    """Symlink the given distributions' files from `site` into `target`, nothing else."""
    owners: dict[str, set[str]] = {}
    for name, dist in installed.items():
        for file in _files(dist):
            owners.setdefault(file.parts[0], set()).add(name)
    for name in dists:
        for file in _files(installed[name]):
            top = file.parts[0]
            if owners[top] <= dists:  # a whole top-level entry belongs to the layer
                link = target / top
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(site / top)
            else:  # shared (a namespace package): link file by file
                link = target / file
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(site / file)


def _repack(dist: metadata.Distribution, site: Path, wheelhouse: Path) -> None:
    """An installed distribution back into a wheel (same files, same tags), for --no-index."""
    info = next(f for f in _files(dist) if f.name == "WHEEL").parent
    tags = [
        line.split(":", 1)[1].strip()
        for line in (site / info / "WHEEL").read_text().splitlines()
        if line.startswith("Tag:")
    ]
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    tag = "-".join(".".join(p) for p in parts)
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    wheel = wheelhouse / f"{info.name.removesuffix('.dist-info')}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        names = []
        for file in _files(dist):
            if "__pycache__" in file.parts or (file.parent == info and file.name in skip):
                continue
            z.write(site / file, file.as_posix())
            names.append(file.as_posix())
        record = "".join(f"{n},,\n" for n in [*names, f"{info.as_posix()}/RECORD"])
        z.writestr(f"{info.as_posix()}/RECORD", record)


def _build_backend_available(installed: dict[str, metadata.Distribution]) -> str | None:
    """Why the isolated build of this package cannot be fed offline, or None when it can."""
    requires = pyproject()["build-system"]["requires"]
    for req in map(Requirement, requires):
        name = canonicalize_name(req.name)
        if name not in installed or not req.specifier.contains(installed[name].version):
            return f"the build needs {req} installed in this environment (add it to dev)"
    setuptools = Version(installed["setuptools"].version)
    if setuptools < Version("70.1") and "wheel" not in installed:
        return "setuptools < 70.1 builds wheels only with `wheel` installed (add setuptools>=70.1)"
    return None


def _stand_in_python(venv: Path, image: set[str], installed: dict[str, Any], site: Path) -> Path:
    """A virtualenv whose site-packages holds exactly the `image` distributions (symlinked)."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
    )
    (venv_site,) = (venv / "lib").glob("python3*/site-packages")
    _link_layer(image, installed, site, venv_site)
    # --system-site-packages only so that user site-packages are on (pip --user refuses
    # otherwise); the interpreter's own site-packages is then taken off sys.path again.
    (venv_site / "sitecustomize.py").write_text(
        "import site, sys\n"
        "_base = set(site.getsitepackages([sys.base_prefix]))\n"
        "sys.path[:] = [p for p in sys.path if p not in _base]\n"
    )
    (venv / "bin" / "pip").write_text(f'#!/bin/sh\nexec "{venv}/bin/python" -m pip "$@"\n')
    (venv / "bin" / "pip").chmod(0o755)
    return venv_site


def _replay_dockerfile(root: Path, env: dict[str, str]) -> None:
    """Every COPY (with .dockerignore) and RUN (by /bin/sh, word for word) under `root`."""

    def in_root(text: str) -> str:
        return re.sub(r"(?<![\w./-])/(?=freqtrade\b|home/ftuser\b)", lambda _: f"{root}/", text)

    for keyword, rest in dockerfile():
        if keyword == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            dest = Path(in_root(words[-1]))
            for source in (ROOT / src for src in words[:-1]):
                files = [source] if source.is_file() else sorted(source.rglob("*"))
                for file in files:
                    if not file.is_file() or dockerignore_excludes(
                        file.relative_to(ROOT).as_posix()
                    ):
                        continue
                    if source.is_dir():
                        target = dest / file.relative_to(source)
                    else:
                        target = dest / file.name if words[-1].endswith("/") else dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(file.read_bytes())
        elif keyword == "RUN":
            run = subprocess.run(
                ["/bin/sh", "-c", in_root(rest)],
                cwd=root / "freqtrade",
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert run.returncode == 0, f"RUN {rest}\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"


# Run inside the stand-in after the build: where each import comes from, what the user site has.
PROBE = """
import json, site, sys
from importlib import metadata
sys.path.insert(0, sys.argv[1])
import bybit_emulator, freqtrade, google.genai, llm_oracle
import GeminiOracleStrategy as strategy
modules = {"llm_oracle": llm_oracle, "google.genai": google.genai,
           "bybit_emulator": bybit_emulator, "freqtrade": freqtrade, "strategy": strategy}
user_site = site.getusersitepackages()
print(json.dumps({
    "user_site": user_site,
    "files": {name: module.__file__ for name, module in modules.items()},
    "strategy_class": hasattr(strategy, "GeminiOracleStrategy"),
    "added": [d.metadata["Name"] for d in metadata.distributions(path=[user_site])],
}))
"""


@pytest.mark.integration
def test_dockerfile_install_steps(tmp_path: Path) -> None:
    """The Dockerfile's COPY and RUN steps, run for real in a stand-in for the official image.

    The stand-in: a virtualenv whose site-packages holds only Freqtrade and what freqtrade
    (with the hyperopt extra, as the image installs it) pulls in, linked from this environment,
    plus pip; the interpreter's own site-packages is hidden. As in the image, packages added
    with `pip install --user` go to a separate user base (/home/ftuser/.local there, a temporary
    one here). Every COPY is replayed into a temporary root with .dockerignore applied, and the
    RUN text is executed by /bin/sh word for word; only its absolute paths are moved under that
    root.

    What differs, and why: the network. pip gets PIP_NO_INDEX and a local wheelhouse instead of
    PyPI, with wheels repacked from this environment's installed copies of what the image lacks
    (google-genai, the plot extra, their own dependencies) and of the build backend; freqtrade
    is not in it, so any attempt to fetch it again fails. So this proves that the copied files
    build and install, that pyproject.toml's dependencies resolve against the image's packages
    under the constraints the RUN writes, that exactly the missing ones are added and nothing
    preinstalled changes, and that `llm_oracle`, google-genai and the strategy import from the
    result. It does not prove that the releases PyPI serves on build day fit the image's pins
    (the constraints make such a build fail loudly rather than move a Freqtrade dependency), nor
    that the image's Python version, or its requirements*.txt pins, equal this environment's.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    installed = _installed(site)
    reason = _build_backend_available(installed)
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"  # "/" of the image
    home = root / "home" / "ftuser"
    (root / "freqtrade").mkdir(parents=True)
    home.mkdir(parents=True)

    # The image's packages: freqtrade[hyperopt]'s closure, and pip to run the RUN steps.
    image = _closure(["freqtrade[hyperopt]", "pip"], installed)
    ours = canonicalize_name(pyproject()["project"]["name"])
    assert "freqtrade" in image and ours not in image
    venv = tmp_path / "image-python"
    venv_site = _stand_in_python(venv, image, installed, site)

    # What PyPI would serve, from this environment: the added packages and the build backend.
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    missing = _closure(pyproject()["project"]["dependencies"], installed) - image - {"freqtrade"}
    build = _closure(pyproject()["build-system"]["requires"], installed)
    build |= {"wheel"} & set(installed)  # older setuptools ask for it to build wheels
    for name in missing | build:
        _repack(installed[name], site, wheelhouse)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(
        HOME=str(home),
        PYTHONUSERBASE=str(home / ".local"),
        PATH=f"{home / '.local' / 'bin'}:{venv / 'bin'}:/usr/bin:/bin",
        PIP_CONFIG_FILE=os.devnull,  # not this machine's pip.conf (indexes, constraints)
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    _replay_dockerfile(root, env)

    strategies = root / "freqtrade" / "strategies"
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE, str(strategies)],
        cwd=root / "freqtrade",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    user_site, files = found["user_site"], found["files"]
    assert user_site.startswith(str(home))
    for name in ("llm_oracle", "google.genai", "bybit_emulator"):
        assert files[name].startswith(user_site), (name, files[name])
    assert files["freqtrade"].startswith(str(venv_site)), "freqtrade must be the image's"
    assert files["strategy"] == str(strategies / "GeminiOracleStrategy.py")
    assert found["strategy_class"]
    # Added: this package and exactly what the image lacked. Nothing the image had was
    # upgraded or shadowed in the user site.
    added = {canonicalize_name(n) for n in found["added"]}
    assert "google-genai" in missing
    assert added == missing | {ours}
    assert (home / ".local" / "bin" / "llm-oracle").exists()
    assert (Path(files["bybit_emulator"]).parent / "data").is_dir()
    # The scratch directory and the constraints file are gone; the config and strategy are in.
    assert not (home / "llm-oracle-src").exists()
    assert not (home / "image-constraints.txt").exists()
    assert (root / "freqtrade" / "config.json").read_bytes() == (ROOT / "config.json").read_bytes()
