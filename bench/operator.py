"""Benchmark: the operator's own overhead with 500 MediaJobs created at once on KMock.

    python bench/operator.py [--jobs 500]

Two operators run, one after the other, each against a fresh in-memory Kubernetes API
(KMock) and as its own process (so its peak RSS is its own):
- bare kopf: a minimal kopf operator whose create handler only creates the worker Job
  (``bench/operator_baseline.py``), the floor set by kopf and the API;
- mediaflow: the real operator with every remote stage answering at once
  (``bench/operator_instant.py``): slots, worker Jobs, status patches, conditions, events.
The benchmark plays the kubelet: each worker Job is marked Complete as soon as it appears.
Prints create→first-Job latency p50/p99, time until all are Succeeded, API requests per
MediaJob and the operator's peak RSS. Targets: p99 < 1 s, peak RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402
from kmock import KubernetesEmulator  # noqa: E402
from kmock._internal.apps import Server  # noqa: E402

from mediaflow.crd import API_VERSION, GROUP, PLURAL, VERSION  # noqa: E402
from mediaflow_operator.jobs import job_name  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.operator.conftest import register_resources, route_kmock_requests_in_constant_time  # noqa: E402

P99_TARGET_S = 1.0
RSS_TARGET_MB = 300.0
NAMESPACE = "bench"
BENCH_AGENT = "mediaflow-bench"  # the benchmark's own API calls are not counted against the operator
MEDIAJOBS = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"

CASES = {
    "bare kopf (create Job only)": [sys.executable, "-m", "kopf", "run", "-A", "--standalone",
                                    str(REPO / "bench" / "operator_baseline.py")],
    "mediaflow operator": [sys.executable, str(REPO / "bench" / "operator_instant.py")],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_kubeconfig(path: Path, server: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "bench"}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
    }))


class Kubelet:
    """Watches worker Jobs: notes when each appears and (optionally) marks it Complete at once."""

    def __init__(self, api: httpx.AsyncClient, complete: bool):
        self.api, self.complete = api, complete
        self.seen: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()

    async def watch(self) -> None:
        async with self.api.stream("GET", JOBS, params={"watch": "true"}, timeout=None) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                name = event["object"]["metadata"]["name"]
                if event["type"] == "ADDED" and name not in self.seen:
                    self.seen[name] = time.perf_counter()
                    if self.complete:
                        task = asyncio.create_task(self._finish(name))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)

    async def _finish(self, name: str) -> None:
        status = {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
        await self.api.patch(f"{JOBS}/{name}/status", content=json.dumps(status),
                             headers={"Content-Type": "application/merge-patch+json"})


async def count_phases(api: httpx.AsyncClient) -> dict[str, int]:
    items = (await api.get(MEDIAJOBS)).json().get("items", [])
    phases: dict[str, int] = {}
    for item in items:
        phase = (item.get("status") or {}).get("phase", "none")
        phases[phase] = phases.get(phase, 0) + 1
    return phases


async def run_case(label: str, command: list[str], jobs: int, work: Path) -> dict:
    mediaflow = label.startswith("mediaflow")
    async with KubernetesEmulator() as kmock, Server(kmock):
        register_resources(kmock)
        kubeconfig = work / f"kubeconfig-{len(label)}"
        write_kubeconfig(kubeconfig, str(kmock.url))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HF_HUB_OFFLINE": "1",
               "MEDIAFLOW_DATA_DIR": str(work / f"data-{len(label)}"),
               # Never called (stages answer at once) but required by the operator's startup check.
               "MEDIAFLOW_TRANSCRIPTION_URL": "http://127.0.0.1:9", "MEDIAFLOW_EMBEDDING_URL": "http://127.0.0.1:9",
               "MEDIAFLOW_LLM_URL": "http://127.0.0.1:9",
               "MEDIAFLOW_OPERATOR_STANDALONE": "true", "MEDIAFLOW_OPERATOR_MAX_RUNNING": str(jobs),
               "MEDIAFLOW_OPERATOR_METRICS_PORT": str(free_port())}
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        proc = subprocess.Popen([*command, "--liveness", liveness], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(work / f"operator-{len(label)}.log", "w"))
        api = httpx.AsyncClient(base_url=str(kmock.url), headers={"User-Agent": BENCH_AGENT},
                                limits=httpx.Limits(max_connections=64), timeout=60)
        try:
            deadline = time.monotonic() + 60
            while not any("watch" in str(r.url) and PLURAL in str(r.url) for r in kmock._requests):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{label} did not start: see {work}/operator-{len(label)}.log")
                await asyncio.sleep(0.1)
            kubelet = Kubelet(api, complete=mediaflow)
            watcher = asyncio.create_task(kubelet.watch())
            await asyncio.sleep(0.2)

            created: dict[str, float] = {}
            gate = asyncio.Semaphore(64)

            async def create(n: int) -> None:
                name = f"talk-{n:04d}"
                body = {"apiVersion": API_VERSION, "kind": "MediaJob",
                        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}",
                                     "generation": 1, "resourceVersion": "1"},
                        "spec": {"source": {"uri": f"https://media.example.com/talks/{n}.mp4"}}}
                async with gate:
                    response = await api.post(MEDIAJOBS, json=body)
                    response.raise_for_status()
                    created[name] = time.perf_counter()

            started = time.perf_counter()
            await asyncio.gather(*(create(n) for n in range(jobs)))
            deadline = time.monotonic() + 600
            while len(kubelet.seen) < jobs and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            all_jobs_s = time.perf_counter() - started
            succeeded_s = None
            if mediaflow:
                while time.monotonic() < deadline:
                    phases = await count_phases(api)
                    if phases.get("Succeeded", 0) + phases.get("Failed", 0) >= jobs:
                        succeeded_s = time.perf_counter() - started
                        break
                    await asyncio.sleep(0.5)
                phases = await count_phases(api)
                if phases.get("Succeeded", 0) != jobs:
                    raise RuntimeError(f"not all MediaJobs succeeded: {phases}")
            latencies = [kubelet.seen[job_name(NAMESPACE, name)] - t for name, t in created.items()
                         if job_name(NAMESPACE, name) in kubelet.seen]
            if len(latencies) != jobs:
                raise RuntimeError(f"{label}: only {len(latencies)} of {jobs} Jobs appeared")
            ours = [r for r in kmock._requests if r.headers.get("User-Agent") != BENCH_AGENT]
            operator_requests = len(ours)
            kinds: dict[str, int] = {}
            for r in ours:
                key = f"{r.method.name if hasattr(r.method, 'name') else r.method} {r.resource.plural if r.resource else r.url.path}{'/' + r.subresource if r.subresource else ''}{' watch' if r.params.get('watch') else ''}"
                kinds[key] = kinds.get(key, 0) + 1
            print(label, {k: round(v / jobs, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:12]},
                  file=sys.stderr)
            rss = peak_rss_mb(proc.pid)
            watcher.cancel()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            await api.aclose()
    return {"label": label, "p50": statistics.median(latencies), "p99": percentile(latencies, 99),
            "all_jobs_s": all_jobs_s, "succeeded_s": succeeded_s, "requests_per_job": operator_requests / jobs,
            "rss_mb": rss}


def main() -> None:
    route_kmock_requests_in_constant_time()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mf-bench-operator-") as tmp:
        results = [asyncio.run(run_case(label, command, args.jobs, Path(tmp))) for label, command in CASES.items()]
    base, ours = results
    print(f"\n{args.jobs} MediaJobs created at once on KMock (load average {os.getloadavg()[0]:.2f})\n")
    print(f"| {'operator':30} | create→Job p50 | p99     | all Jobs | all Succeeded | API req/job | peak RSS |")
    print(f"|{'-' * 32}|----------------|---------|----------|---------------|-------------|----------|")
    for r in results:
        done = f"{r['succeeded_s']:.1f} s" if r["succeeded_s"] is not None else "n/a"
        print(f"| {r['label']:30} | {r['p50'] * 1000:11.0f} ms | {r['p99']:5.2f} s | {r['all_jobs_s']:6.1f} s "
              f"| {done:>13} | {r['requests_per_job']:11.1f} | {r['rss_mb']:5.0f} MB |")
    print(f"| {'ratio mediaflow / bare kopf':30} | {ours['p50'] / base['p50']:14.2f} | {ours['p99'] / base['p99']:7.2f} "
          f"| {ours['all_jobs_s'] / base['all_jobs_s']:8.2f} | {'':13} | {ours['requests_per_job'] / base['requests_per_job']:11.2f} "
          f"| {ours['rss_mb'] / base['rss_mb']:8.2f} |\n")
    verdict = lambda ok: "PASS" if ok else "MISS"  # noqa: E731
    print(f"BENCH operator_create_to_job_p99_s {ours['p99']:.3f} target <{P99_TARGET_S} "
          f"{verdict(ours['p99'] < P99_TARGET_S)}")
    print(f"BENCH operator_peak_rss_mb {ours['rss_mb']:.0f} target <{RSS_TARGET_MB:.0f} "
          f"{verdict(ours['rss_mb'] < RSS_TARGET_MB)}")


if __name__ == "__main__":
    main()
