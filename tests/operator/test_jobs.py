"""Worker Job manifests (names, labels, owner references) and the watched-namespaces setting.

Unit tests: no API server. The limits are Kubernetes' own: a Job's name becomes the
``job-name`` label of its pods, so it must be a DNS label (≤ 63) and a valid label value.
"""

from __future__ import annotations

import re

import pytest

from mediaflow.crd import API_VERSION, KIND
from mediaflow.spec import MediaJobSpec
from mediaflow.status import mediajob_media_id
from mediaflow_operator.jobs import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MEDIA_ID_LABEL,
    MEDIAJOB_ANNOTATION,
    extract_job,
    job_name,
    job_namespace,
)
from mediaflow_operator.settings import OperatorSettings

# RFC 1123 label (what a Job's name must be for its pods' job-name label) and a label value.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# A label key: optional DNS-subdomain prefix (≤ 253) and a name (≤ 63).
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

LONG_PREFIX = "a" * 60
NAMES = [
    "island", "x", "a" * 253, LONG_PREFIX + "b" * 140, LONG_PREFIX + "c" * 140,
    "Talk.2026.Keynote", "--dashes--", "ends-with-dash-" + "z" * 23 + "-", "9-starts-with-digit",
    "a.b.c", "...",
]


@pytest.fixture
def settings(monkeypatch) -> OperatorSettings:
    for key in ("MEDIAFLOW_OPERATOR_NAMESPACE", "MEDIAFLOW_OPERATOR_WATCH_NAMESPACES"):
        monkeypatch.delenv(key, raising=False)
    return OperatorSettings()


def body(namespace: str, name: str) -> dict:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1234"}}


def spec() -> MediaJobSpec:
    return MediaJobSpec.model_validate({"source": {"uri": "https://example.com/talk.mp4"}})


def manifest(namespace: str, name: str, settings: OperatorSettings) -> dict:
    return extract_job(body(namespace, name), mediajob_media_id(namespace, name), spec(), settings)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("namespace", ["media", "n" * 63])
def test_job_names_are_dns_labels_of_at_most_63(namespace, name):
    job = job_name(namespace, name)
    assert len(job) <= 63, job
    assert DNS_LABEL.match(job), job
    assert job.endswith("-extract")
    assert mediajob_media_id(namespace, name).removeprefix("mj-") in job


def test_a_readable_prefix_of_the_name_is_kept():
    assert job_name("media", "Island").startswith("island-")
    assert job_name("media", "talk.2026").startswith("talk-2026-")


def test_long_names_sharing_a_prefix_get_distinct_jobs():
    first, second = LONG_PREFIX + "b" * 140, LONG_PREFIX + "c" * 140
    assert len(first) == len(second) == 200
    assert job_name("media", first) != job_name("media", second)


def test_the_same_name_in_two_namespaces_gets_distinct_jobs():
    assert job_name("team-a", "talk") != job_name("team-b", "talk")
    # …also when the Jobs of both run in the operator's one namespace, where they would clash.
    long = "t" * 200
    assert job_name("team-a", long) != job_name("team-b", long)


def test_all_names_are_distinct():
    jobs = {job_name(ns, name) for ns in ("a", "b") for name in NAMES}
    assert len(jobs) == 2 * len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_labels_are_valid_and_short(settings, name):
    job = manifest("media", name, settings)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        for key, value in labels.items():
            prefix, _, key_name = key.rpartition("/")
            assert len(key_name) <= 63 and LABEL_NAME.match(key_name), key
            assert len(prefix) <= 253
            assert len(value) <= 63, (key, value)
            assert LABEL_VALUE.match(value), (key, value)
        assert labels[MEDIA_ID_LABEL] == mediajob_media_id("media", name)
        assert labels[MANAGED_BY_LABEL] == MANAGED_BY
    # The full identity, which can be longer than a label value, is an annotation.
    assert job["metadata"]["annotations"][MEDIAJOB_ANNOTATION] == f"media/{name}"
    assert job["metadata"]["name"] == job_name("media", name)


def test_same_namespace_job_is_owned_by_its_mediajob(settings):
    job = manifest("media", "island", settings)
    assert job["metadata"]["namespace"] == "media"
    [owner] = job["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": API_VERSION, "kind": KIND, "name": "island", "uid": "uid-1234",
                     "controller": True, "blockOwnerDeletion": True}


def test_job_in_the_operator_namespace_has_no_cross_namespace_owner(monkeypatch):
    monkeypatch.setenv("MEDIAFLOW_OPERATOR_NAMESPACE", "mediaflow-system")
    settings = OperatorSettings()
    foreign = manifest("team-a", "island", settings)
    assert foreign["metadata"]["namespace"] == "mediaflow-system"
    assert "ownerReferences" not in foreign["metadata"]
    assert foreign["metadata"]["annotations"][MEDIAJOB_ANNOTATION] == "team-a/island"
    # A MediaJob of the operator's own namespace still owns its Job.
    own = manifest("mediaflow-system", "island", settings)
    assert own["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True


def test_jobs_run_in_the_mediajob_namespace_without_an_operator_namespace(settings):
    assert job_namespace("team-a", settings) == "team-a"
    assert manifest("team-a", "x", settings)["metadata"]["namespace"] == "team-a"


# -- MEDIAFLOW_OPERATOR_WATCH_NAMESPACES ----------------------------------------------

@pytest.mark.parametrize(("value", "own", "expected"), [
    ("team-a", None, ["team-a"]),
    ("team-a,team-b", None, ["team-a", "team-b"]),
    (" team-a , team-b ,", "ops", ["team-a", "team-b"]),
    ("*", None, None),
    ("team-a,*", "ops", None),
    ("", "ops", ["ops"]),
    (" , ", "ops", ["ops"]),
])
def test_watched_namespaces(monkeypatch, value, own, expected):
    monkeypatch.setenv("MEDIAFLOW_OPERATOR_WATCH_NAMESPACES", value)
    if own is None:
        monkeypatch.delenv("MEDIAFLOW_OPERATOR_NAMESPACE", raising=False)
    else:
        monkeypatch.setenv("MEDIAFLOW_OPERATOR_NAMESPACE", own)
    assert OperatorSettings().watched_namespaces() == expected


def test_watched_namespaces_needs_something(settings):
    with pytest.raises(ValueError, match="MEDIAFLOW_OPERATOR_WATCH_NAMESPACES"):
        settings.watched_namespaces()


def test_watched_namespaces_empty_string_needs_something(monkeypatch):
    monkeypatch.setenv("MEDIAFLOW_OPERATOR_WATCH_NAMESPACES", "")
    monkeypatch.delenv("MEDIAFLOW_OPERATOR_NAMESPACE", raising=False)
    with pytest.raises(ValueError):
        OperatorSettings().watched_namespaces()


# -- the Job watch cache (runtime.JobWatch) -------------------------------------------

async def test_job_watch_wakes_a_waiter_on_every_change():
    import asyncio

    from mediaflow_operator.runtime import JobWatch

    watch = JobWatch()
    waiter = asyncio.create_task(watch.wait("media", "j", timeout=10))
    await asyncio.sleep(0)
    watch.seen("media", "j", {"metadata": {"name": "j"}})
    await asyncio.wait_for(waiter, 1)
    assert watch.latest("media", "j") == {"metadata": {"name": "j"}}

    waiter = asyncio.create_task(watch.wait("media", "j", timeout=10))
    await asyncio.sleep(0)
    watch.seen("media", "j", None)  # DELETED
    await asyncio.wait_for(waiter, 1)
    assert watch.latest("media", "j") is None


async def test_job_watch_keeps_nothing_of_a_deleted_job():
    from mediaflow_operator.runtime import JobWatch

    watch = JobWatch()
    watch.seen("media", "j", {"metadata": {"name": "j"}})
    watch.forget("media", "j")  # the finalizer is done...
    watch.seen("media", "j", None)  # ...and the Job's DELETED event arrives after it
    assert watch._latest == {} and watch._changed == {}
    # A Job removed by its TTL while its MediaJob stays: nothing kept either.
    watch.seen("media", "k", {"metadata": {"name": "k"}})
    watch.seen("media", "k", None)
    assert watch._latest == {} and watch._changed == {}
