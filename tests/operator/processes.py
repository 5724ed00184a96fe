"""The real operator as a separate ``python -m kopf run`` process against KMock, for the tests
that kill it (a KopfRunner shares the test's process and its ``runtime`` global: no SIGKILL)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.conftest import REPO, free_port
from tests.operator.conftest import NAMESPACE, OPERATOR_MAIN


class KopfProcess:
    """One operator process, its output in ``log``. Standalone unless ``peer_id`` is given (then
    kopf's peering is on and the peer identity is its POD_ID, as a pod's name would be)."""

    def __init__(self, env: dict[str, str], log: Path, *, peer_id: str | None = None, verbose: bool = False):
        self.peer_id, self.log_path = peer_id, log
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = {**env, "MEDIAFLOW_OPERATOR_METRICS_PORT": str(self.metrics_port)}
        if peer_id is not None:
            env["POD_ID"] = peer_id
        self._log = log.open("w")
        flags = (["--standalone"] if peer_id is None else []) + (["--verbose"] if verbose else [])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", *flags, "--namespace", NAMESPACE,
             "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz", str(OPERATOR_MAIN)],
            env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def daemon_invocations(self, name: str) -> int:
        """How often kopf invoked the pipeline daemon of MediaJob ``name`` here (needs verbose)."""
        return len(re.findall(rf"\[{NAMESPACE}/{re.escape(name)}\] Daemon 'pipeline' is invoked", self.log()))

    def exited_daemon(self, name: str) -> bool:
        return re.search(rf"\[{NAMESPACE}/{re.escape(name)}\] Daemon 'pipeline' has exited on its own",
                         self.log()) is not None

    def handled(self, cluster, name: str) -> bool:
        """Did this process patch the status of MediaJob ``name``? Told apart by the User-Agent
        each operator replica sends, ``mediaflow-operator/<version> (<POD_ID>)``."""
        tag = f"({self.peer_id})"
        return any(tag in (r.headers.get("User-Agent") or "")
                   for r in cluster.requests("PATCH", f"/namespaces/{NAMESPACE}/mediajobs/{name}/status"))

    def logged_at(self, text: str, after: datetime | None = None) -> datetime:
        """When this process first logged ``text`` (after ``after``, if given); kopf's log lines
        start with a local timestamp."""
        for line in self.log().splitlines():
            if text in line:
                at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                if after is None or at >= after:
                    return at
        raise LookupError(f"{text!r} not logged")

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)
        self._log.close()

    async def stop(self) -> int:
        # Waited for off the event loop: KMock runs on it, and kopf's graceful exit still talks
        # to the API (its last peering keep-alive); blocking here would stall both until timeouts.
        if self.proc.poll() is None:
            self.proc.terminate()  # kopf's graceful exit: cleanup closes the embedded Qdrant
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode
