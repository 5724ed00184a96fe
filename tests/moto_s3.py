"""A real S3 API on loopback for the ``s3://`` tests: ``moto_server`` (PyPI ``moto[server]``) as a
subprocess on a free port, a bucket in it, and the environment the chart gives every component
(``AWS_ENDPOINT_URL`` from the pipeline ConfigMap, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` from storage.media.s3.credentialsSecret)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import free_port

BUCKET = "mediaflow-test"


class MotoS3:
    def __init__(self, log: Path, *, auth: bool = False):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.auth = auth
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a Mediaflow process needs to reach this S3 (nothing from the host's ~/.aws)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "mediaflow-test",
            "AWS_SECRET_ACCESS_KEY": "mediaflow-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60) -> float:
        started = time.monotonic()
        env = {**os.environ}
        if self.auth:  # IAM enforced from the first request: unknown keys are refused (403)
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        moto_server = Path(sys.executable).parent / "moto_server"
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(self.port)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - started < timeout:
            assert self.proc.poll() is None, f"moto_server exited:\n{self.log_path.read_text()[-2000:]}"
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=2)
                return time.monotonic() - started
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"moto_server did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self):
        import boto3

        env = self.env
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, bucket: str = BUCKET) -> str:
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        """Every key under ``prefix``, from S3 itself (no s3fs, no cache)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def forget_s3fs_instances() -> None:
    """s3fs caches filesystem instances (and their clients) per process: drop them, so the next
    ``s3://`` use reads the environment of now."""
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def s3_environment(server: MotoS3) -> Iterator[None]:
    """This process pointed at ``server`` (as the chart points every pod at its S3)."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for name, value in server.env.items():
            mp.setenv(name, value)
        forget_s3fs_instances()
        try:
            yield
        finally:
            forget_s3fs_instances()


@contextlib.contextmanager
def running_s3(log: Path, *, auth: bool = False) -> Iterator[MotoS3]:
    server = MotoS3(log, auth=auth)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def serve_bucket(tmp_path_factory, *, environment: bool = True) -> Iterator[MotoS3]:
    """A module fixture's body: moto_server with ``BUCKET`` created, and (``environment``) this
    process pointed at it for the fixture's life."""
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.create_bucket()
        with s3_environment(server) if environment else contextlib.nullcontext():
            yield server
