"""A reading of images/Dockerfile for the tests: stages, what a target's filesystem holds, who owns it.

Only what this Dockerfile uses is modelled: `FROM <stage|scratch> AS name`,
`COPY [--from=stage] [--chown=u:g] src dest` (a directory's contents go into dest, .dockerignore
applied to the build context), `RUN ... install -d -o U -g G dirs`, ENV, USER and ENTRYPOINT.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "Dockerfile"


@lru_cache
def stages() -> dict[str, list[dict]]:
    """Instructions per stage name (`FROM x AS name`); "" holds the global ARGs."""
    with DOCKERFILE.open("rb") as fh:
        instructions = DockerfileParser(fileobj=fh).structure
    result: dict[str, list[dict]] = {"": []}
    current = result[""]
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            name = words[-1].lower() if len(words) >= 3 and words[-2].upper() == "AS" else ""
            current = result.setdefault(name, [])
        current.append(instruction)
    return result


def stage_chain(target: str) -> list[str]:
    """The target and the stages it is built FROM, nearest first."""
    chain = [target]
    while True:
        parent = stages()[chain[-1]][0]["value"].split()[0].lower()
        if parent not in stages():
            return chain
        chain.append(parent)


def run_commands(stage: str) -> list[str]:
    """Each RUN of a stage as one shell line (continuations joined, mounts kept)."""
    return [i["value"] for i in stages()[stage] if i["instruction"] == "RUN"]


def global_arg_defaults() -> dict[str, str]:
    args = {}
    for instruction in stages()[""]:
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            key, _, value = instruction["value"].partition("=")
            args[key.strip()] = value.strip().strip('"')
    return args


def _dockerignored(rel: str) -> bool:
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    parts = rel.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(rel, pattern) or any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


@dataclass
class Copied:
    source: str  # repo path
    owner: str   # uid:gid


@dataclass
class Script:
    path: str
    text: str

    @property
    def watched(self) -> list[str]:
        return re.findall(r"/opt/mediaflow/src[\w/.-]*", self.text)


@dataclass
class ImagePaths:
    """What a target's image holds, as far as the COPY/RUN/ENV/USER lines say."""
    copied: dict[str, Copied] = field(default_factory=dict)   # file path in the image -> origin
    directories: dict[str, str] = field(default_factory=dict)  # directory in the image -> owner
    env: dict[str, str] = field(default_factory=dict)
    user: str = "0"
    entrypoint: list[str] = field(default_factory=list)

    def directory_owner(self, path: str) -> str | None:
        return self.directories.get(path)

    def entrypoint_script(self) -> Script | None:
        for word in self.entrypoint:
            if word in self.copied:
                return Script(word, (REPO / self.copied[word].source).read_text())
        return None


def _copy(paths: ImagePaths, value: str) -> None:
    words = shlex.split(value)
    owner, stage = "0:0", None
    while words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--chown="):
            owner = flag.removeprefix("--chown=")
        elif flag.startswith("--from="):
            stage = flag.removeprefix("--from=").lower()
    *sources, dest = words
    if stage is not None:
        other = image_paths(stage)
        for source in sources:
            src = source.rstrip("/")
            target = dest.rstrip("/") or "/"
            paths.directories[target] = owner
            for inside, copied in other.copied.items():
                if inside.startswith(src + "/"):
                    paths.copied[target + inside[len(src):]] = Copied(copied.source, owner)
            for inside in other.directories:
                if inside.startswith(src + "/"):
                    paths.directories[target + inside[len(src):]] = owner
        return
    for source in sources:
        src = REPO / source
        if src.is_dir():
            target = PurePosixPath(dest)
            for parent in target.parents:  # created as needed, by root
                paths.directories.setdefault(str(parent), "0:0")
            paths.directories[str(target)] = owner
            for file in sorted(src.rglob("*")):
                rel = file.relative_to(REPO).as_posix()
                if _dockerignored(rel):
                    continue
                inside = str(target / file.relative_to(src).as_posix())
                if file.is_dir():
                    paths.directories[inside] = owner
                else:
                    paths.copied[inside] = Copied(rel, owner)
        else:
            inside = str(PurePosixPath(dest) / src.name) if dest.endswith("/") else dest
            paths.copied[inside] = Copied(source, owner)


def _run(paths: ImagePaths, value: str) -> None:
    for command in re.split(r"&&|;", value):
        words = shlex.split(command.replace("\\\n", " "))
        if words[:2] == ["install", "-d"]:
            owner_uid = words[words.index("-o") + 1] if "-o" in words else "0"
            owner_gid = words[words.index("-g") + 1] if "-g" in words else "0"
            dirs = [w for w in words[2:] if w.startswith("/")]
            for d in dirs:
                paths.directories[d] = f"{owner_uid}:{owner_gid}"


@lru_cache
def image_paths(target: str) -> ImagePaths:
    paths = ImagePaths()
    for stage in reversed(stage_chain(target)):
        for instruction in stages()[stage][1:]:
            kind, value = instruction["instruction"], instruction["value"]
            if kind == "COPY":
                _copy(paths, value)
            elif kind == "RUN":
                _run(paths, value)
            elif kind == "ENV":
                for word in shlex.split(value):
                    key, _, val = word.partition("=")
                    paths.env[key] = val
            elif kind == "USER":
                paths.user = value
            elif kind == "ENTRYPOINT":
                paths.entrypoint = json.loads(value)
    return paths


def lock_pins(path: Path) -> dict[str, str]:
    """A lock file's pins: normalized distribution name -> version."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins
