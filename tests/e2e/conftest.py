"""Cluster mode end to end: the operator's KMock cluster, serving apps and kubelet fixtures."""

from tests.operator.conftest import (  # noqa: F401 (fixtures)
    api_server_generates_names,
    cluster,
    embeddings_service,
    kubelet,
    operator,
    operator_env,
    operator_process,
    transcription_service,
)
from tests.gateway.conftest import (  # noqa: F401 (fixtures)
    sample_bytes,
)


import itertools  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import pytest  # noqa: E402
from kmock._internal import enums  # noqa: E402
from kmock._internal.k8s import KubernetesEmulator  # noqa: E402


@pytest.fixture(autouse=True)
def api_server_sets_metadata(monkeypatch):
    """What a real API server adds to a created object and KMock does not: uid,
    resourceVersion, generation, creationTimestamp (kopf's finalizer patch tests the
    resourceVersion). Objects the gateway creates get them as they would in a cluster."""
    versions = itertools.count(1)
    original = KubernetesEmulator._handle

    async def handle(self, request):
        if request.resource is not None and request.action == enums.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", str(next(versions)))
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return await original(self, request)

    monkeypatch.setattr(KubernetesEmulator, "_handle", handle)
