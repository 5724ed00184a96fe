"""The floor: a bare kopf operator whose create handler only creates the worker Job.

bench/operator.py runs it on the same KMock workload to separate kopf's own
create→Job latency from what the Mediaflow operator adds.
"""

from __future__ import annotations

import kopf

from mediaflow.crd import GROUP, PLURAL, VERSION
from mediaflow.spec import MediaJobSpec
from mediaflow.status import mediajob_media_id
from mediaflow_operator.jobs import extract_job
from mediaflow_operator.kube import KubeApi
from mediaflow_operator.settings import OperatorSettings

_state: dict = {}


@kopf.on.startup()
async def login(settings: kopf.OperatorSettings, logger, **_) -> None:
    settings.scanning.disabled = True  # as the mediaflow operator: KMock serves no namespace list
    info = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    _state["kube"] = KubeApi.from_connection(info, timeout=60, connect_timeout=30)
    _state["settings"] = OperatorSettings()


@kopf.on.create(GROUP, VERSION, PLURAL)
async def create_job(body, spec, name, namespace, **_) -> None:
    manifest = extract_job(body, mediajob_media_id(namespace, name), MediaJobSpec.model_validate(dict(spec)),
                           _state["settings"])
    await _state["kube"].create_job(manifest)
