"""Languages through the API: an upload with no language is detected and its language
shown (media view, job); a given language is used; an unknown code is a 422 that stores
nothing; the media page says which language it is."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.conftest import wer
from tests.gateway.conftest import AUTH, multipart, running_app
from tests.speech import SAMPLES, speak

pytestmark = [pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway(tmp_path_factory, engines_cache):
    data = tmp_path_factory.mktemp("gw-lang")
    async with running_app(data, engines_cache) as client:
        yield client, data


async def process(client, payload: bytes, name: str, **fields) -> dict:
    response = await client.post("/v1/media", headers=AUTH, **multipart(name, payload, **fields))
    assert response.status_code == 202, response.text
    events = await client.get(response.json()["events_url"], headers=AUTH)
    assert '"phase":"Succeeded"' in events.text.replace(" ", ""), events.text[-500:]
    return response.json()


async def test_german_speech_is_detected_and_shown(gateway, tmp_path):
    client, _ = gateway
    wav = speak(SAMPLES["de"], tmp_path / "de.wav")
    created = await process(client, wav.read_bytes(), "leuchtturm.wav", title="Leuchtturm")
    media = (await client.get(f"/v1/media/{created['media_id']}", headers=AUTH)).json()
    assert media["language"] == "de" and media["language_name"] == "German"
    assert media["language_probability"] > 0.8
    transcript = (await client.get(f"/v1/media/{created['media_id']}/transcript", headers=AUTH)).json()
    assert transcript["language"] == "de"
    assert wer(SAMPLES["de"].reference, " ".join(s["text"] for s in transcript["segments"])) <= 0.3
    hits = (await client.post("/v1/search", headers=AUTH, json={
        "query": "Der Leuchtturmwärter putzt die Lampe", "media_id": created["media_id"]})).json()["hits"]
    assert "Lampe" in hits[0]["text"]
    page = (await client.get(f"/media/{created['media_id']}")).text
    script = (await client.get("/static/media.js")).text
    assert 'id="media-meta"' in page and "language_name" in script and "detected" in script


async def test_a_given_language_is_used_not_detected(gateway, tmp_path):
    client, _ = gateway
    wav = speak(SAMPLES["fr"], tmp_path / "fr.wav")
    created = await process(client, wav.read_bytes(), "phare.wav", language="fr")
    media = (await client.get(f"/v1/media/{created['media_id']}", headers=AUTH)).json()
    assert (media["language"], media["language_probability"], media["language_name"]) == ("fr", None, "French")


@pytest.mark.bad_input
@pytest.mark.parametrize("language", ["xx", "english", "EN-us"])
async def test_an_unknown_language_is_a_422_and_stores_nothing(gateway, tmp_path, language):
    client, data = gateway
    wav = speak(SAMPLES["en"], tmp_path / "en.wav")
    before = sorted(p.name for p in (data / "artifacts" / "media").glob("*")) if (data / "artifacts" / "media").exists() else []
    response = await client.post("/v1/media", headers=AUTH, **multipart("en.wav", wav.read_bytes(), language=language))
    assert response.status_code == 422, response.text
    body = response.json()
    assert "unknown language" in response.text and body["error"]["details"][0]["loc"][-1] == "language", body
    after = sorted(p.name for p in (data / "artifacts" / "media").glob("*")) if (data / "artifacts" / "media").exists() else []
    assert after == before
