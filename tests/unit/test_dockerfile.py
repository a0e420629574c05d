"""
The image, tested without a Docker engine (there is none here): the Dockerfile's instructions
reference only what exists, name the console script and a numeric non-root user, and the
builder stage's own commands, replayed on this machine, build a venv whose `statecar` runs.

The replay installs the project with `--no-deps` into a venv that sees this interpreter's
site-packages (a full `pip install .[all]` downloads and byte-compiles ~300 MB and takes over a
minute). Set STATECAR_FULL_IMAGE_BUILD=1 to replay the builder's commands unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@dataclass
class Instruction:
    keyword: str
    arguments: str

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON-array form (`["statecar"]`), or None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.arguments):
                name, _, value = token.partition("=")
                values[name] = value
        return values

    def labels(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            for token in shlex.split(instruction.arguments):
                name, _, value = token.partition("=")
                values[name] = value
        return values


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = arguments.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, found {keyword}"
            name, _, default = arguments.partition("=")
            args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments.strip()))
    return args, stages


def copy_sources(instruction: Instruction) -> tuple[list[str], str, str | None]:
    """(sources, destination, --from stage) of a COPY in shell form."""
    tokens = shlex.split(instruction.arguments)
    origin = next((t.split("=", 1)[1] for t in tokens if t.startswith("--from=")), None)
    paths = [t for t in tokens if not t.startswith("--")]
    return paths[:-1], paths[-1], origin


ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILDER = next(s for s in STAGES if s.name == "builder")
RUNTIME = STAGES[-1]


def test_the_image_is_built_in_two_stages_and_the_last_one_is_the_runtime() -> None:
    assert len(STAGES) == 2
    assert RUNTIME is not BUILDER
    assert not any("pip" in r.arguments for r in RUNTIME.all("RUN")), (
        "the runtime stage installs nothing: the venv comes from the builder"
    )


def test_every_base_image_is_pinned_by_a_version_tag() -> None:
    for stage in STAGES:
        image = stage.image
        for name, default in ARGS.items():
            image = image.replace("${" + name + "}", default).replace("$" + name, default)
        repository, _, tag = image.partition("@")[0].rpartition(":")
        assert repository, f"{stage.image}: no tag (an unpinned image moves under you)"
        assert tag != "latest", f"{stage.image}: 'latest' is not a pin"
        assert re.match(r"^\d+\.\d+", tag), (
            f"{stage.image}: the tag must name a version, got {tag!r}"
        )


def test_builder_and_runtime_share_the_base_image_so_the_venv_interpreter_path_is_valid() -> None:
    assert BUILDER.image == RUNTIME.image
    assert BUILDER.image.startswith("python:3.11"), (
        "pyproject's requires-python and the CI interpreter are 3.11"
    )


def test_every_copy_source_exists_in_the_repository_and_is_in_the_build_context() -> None:
    allowed = [
        line[1:].strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copies = [i for s in STAGES for i in s.all("COPY") if copy_sources(i)[2] is None]
    assert copies
    for instruction in copies:
        sources, _, _ = copy_sources(instruction)
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {source}: no such path in the repository"
            assert path in allowed, (
                f"COPY {source}: excluded from the build context by .dockerignore"
            )


def test_the_dockerignore_keeps_tests_caches_and_git_out_of_the_context() -> None:
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()]
    assert next(x for x in lines if x and not x.startswith("#")) == "*", (
        "an allowlist starts by excluding everything"
    )
    for excluded in ("tests/", ".git/", "charts/", "bench/"):
        assert f"!{excluded}" not in lines


def test_the_runtime_copies_exactly_the_venv_the_builder_made() -> None:
    venv = BUILDER.env()["VIRTUAL_ENV"]
    copies = [copy_sources(i) for i in RUNTIME.all("COPY")]
    assert ([venv], venv, "builder") in copies
    assert RUNTIME.env()["PATH"].startswith(f"{venv}/bin:")


def test_the_entrypoint_is_the_console_script_in_exec_form() -> None:
    (entrypoint,) = RUNTIME.all("ENTRYPOINT")
    assert entrypoint.exec_form == ["statecar"], (
        "exec form, no shell: SIGTERM must reach the program"
    )
    assert "statecar" in PROJECT["scripts"]


def test_the_default_command_and_the_injected_command_are_subcommands_of_that_script() -> None:
    from statecar_cli.main import build_parser
    from statecar_operator.injection.plan import SIDECAR_COMMAND

    actions = build_parser()._actions
    subcommands = set(next(a.choices for a in actions if isinstance(a, argparse._SubParsersAction)))
    (cmd,) = RUNTIME.all("CMD")
    assert cmd.exec_form is not None
    assert cmd.exec_form[0] in subcommands
    assert SIDECAR_COMMAND[0] in PROJECT["scripts"]
    assert SIDECAR_COMMAND[1] in subcommands


def test_the_user_is_numeric_and_not_root_and_owns_the_workdir() -> None:
    (user,) = RUNTIME.all("USER")
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit(), f"USER {user.arguments}: numeric, so the kubelet can verify runAsNonRoot"
    assert int(uid) != 0, f"USER {user.arguments}: not root"
    assert gid == "" or int(gid) != 0, f"USER {user.arguments}: the group is numeric and not root"
    workdir = RUNTIME.all("WORKDIR")[-1].arguments
    assert any(
        f"-o {uid}" in run.arguments and workdir in run.arguments for run in RUNTIME.all("RUN")
    ), f"WORKDIR {workdir} is created owned by {uid}"


def test_the_chart_and_the_injector_run_as_the_images_user() -> None:
    (user,) = RUNTIME.all("USER")
    uid = int(user.arguments.partition(":")[0])
    values = yaml.safe_load((ROOT / "charts/statecar/values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["sidecar"]["runAsUser"] == uid
    from statecar_operator.settings import InjectorSettings

    assert InjectorSettings().run_as_user == uid


def test_the_runtime_never_writes_bytecode_and_logs_unbuffered() -> None:
    env = RUNTIME.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", (
        "a read-only root filesystem cannot take .pyc files"
    )
    assert env["PYTHONUNBUFFERED"] == "1"


def test_the_runtime_fixes_glibcs_mmap_threshold_at_the_sidecars_own_value() -> None:
    """Set at exec (glibc reads it before main), so the sidecar skips ctypes and mallopt."""
    from statecar_sidecar import memory

    env = RUNTIME.env()
    assert int(env["MALLOC_MMAP_THRESHOLD_"]) == memory.MMAP_THRESHOLD_BYTES
    assert memory.release_large_buffers(env) is False, "the sidecar leaves the image's value alone"


def test_oci_labels_name_the_package_version_and_the_image_the_chart_deploys() -> None:
    labels = RUNTIME.labels()
    version_arg = next(i for i in RUNTIME.all("ARG") if i.arguments.startswith("VERSION="))
    assert version_arg.arguments == f"VERSION={PROJECT['version']}"
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]
    chart = yaml.safe_load((ROOT / "charts/statecar/Chart.yaml").read_text())
    assert chart["appVersion"] == PROJECT["version"]
    values = yaml.safe_load((ROOT / "charts/statecar/values.yaml").read_text())
    from statecar_operator.settings import InjectorSettings

    assert InjectorSettings().image == f"{values['image']['repository']}:{PROJECT['version']}", (
        "the operator's default sidecar image is the image the chart deploys"
    )


FAST_VENV = 'python -m venv "$VIRTUAL_ENV"'
FULL_INSTALL = '"$VIRTUAL_ENV/bin/pip" install ".[all]"'


def _see_site_packages_of_this_python() -> str:
    """A shell command that makes the new venv see the site-packages this test runs with.

    `venv --system-site-packages` would not do: from inside a virtualenv it exposes the base
    interpreter's site-packages, not the virtualenv's, where the dependencies are. A `.pth` file
    in the new venv appends this interpreter's site directories after the venv's own, so the
    venv's copy of statecar still comes first.
    """
    directories = [site.getusersitepackages(), *site.getsitepackages()]
    seen = [d for d in dict.fromkeys(directories) if Path(d).is_dir()]
    write = (
        "import pathlib, sys, sysconfig;"
        "pathlib.Path(sysconfig.get_path('purelib'), '_test_site_packages.pth')"
        ".write_text(sys.argv[1])"
    )
    lines = "".join(f"{directory}\n" for directory in seen)
    return f'"$VIRTUAL_ENV/bin/python" -c {shlex.quote(write)} {shlex.quote(lines)}'


@pytest.mark.timeout(600)
def test_the_builder_stage_commands_build_a_venv_whose_statecar_runs(tmp_path: Path) -> None:
    full = os.environ.get("STATECAR_FULL_IMAGE_BUILD", "") not in ("", "0")
    workdir = tmp_path / "src"
    venv = tmp_path / "venv"
    # Lay the build context out as the builder's COPY instructions do.
    (current,) = [w.arguments for w in BUILDER.all("WORKDIR")]
    assert current == "/src"
    for instruction in BUILDER.all("COPY"):
        sources, destination, _ = copy_sources(instruction)
        for source in sources:
            target = workdir / destination if destination not in ("./", ".") else workdir
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target / Path(source).name)
    env = dict(os.environ)
    env.update(BUILDER.env())
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is 3.11
    env.pop("PIP_NO_CACHE_DIR", None)  # the image wants no cache; a test run may reuse one
    env.pop("PYTHONPATH", None)
    (run,) = BUILDER.all("RUN")
    command = run.arguments
    assert FAST_VENV in command
    assert FULL_INSTALL in command
    if not full:
        # Same commands, but the dependencies come from this interpreter's site-packages.
        command = command.replace(
            FAST_VENV, f"{FAST_VENV} && {_see_site_packages_of_this_python()}"
        )
        command = command.replace(
            FULL_INSTALL, FULL_INSTALL.replace(" install ", " install --no-deps ")
        )
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, (
        f"builder RUN failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    assert result.stdout.strip().splitlines()[-1] == f"statecar {PROJECT['version']}"
    assert not (venv / "bin" / "pip").exists(), "the final venv carries no pip"

    # Both programs import from the venv's own copy of the package (not from this checkout),
    # so the wheel holds every package the image needs.
    probe = (
        "import json, statecar_cli.main, statecar_operator.app, statecar_sidecar.server, statecar_contract;"
        "print(json.dumps([m.__file__ for m in (statecar_cli.main, statecar_operator.app,"
        " statecar_sidecar.server, statecar_contract)]))"
    )
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for module_file in json.loads(imported.stdout):
        assert Path(module_file).is_relative_to(venv), f"{module_file} is not the venv's copy"
    # Each program's command line starts from the venv's console script.
    for argv in (["operator", "rbac"], ["sidecar", "--help"]):
        ran = subprocess.run(
            [str(venv / "bin" / "statecar"), *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, f"statecar {' '.join(argv)}: {ran.stderr}"
