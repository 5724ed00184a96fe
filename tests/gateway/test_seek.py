"""Deep links into the sentence through the API: a recording of three passages with 2.5 s
pauses, uploaded and processed; ``/v1/search`` over the whole library (no media_id, as the
library page searches) gives, for each passage, a top hit whose ``seek`` (the core's) is the
start of the answering sentence inside that passage, and whose link opens the media page
there. The library page carries the search form."""

from __future__ import annotations

import pytest
import pytest_asyncio

from mediaflow.samples import PASSAGES, make_sample
from tests.core.test_seek import EARLY, QUERIES  # the same recording, queries and tolerance
from tests.gateway.conftest import AUTH, multipart, running_app

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("paused-gw") / "three.wav", passages=PASSAGES[1:4],
                       gap_seconds=2.5, video=False)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def library(tmp_path_factory, engines_cache, sample):
    async with running_app(tmp_path_factory.mktemp("gw-seek"), engines_cache) as client:
        with open(sample.media, "rb") as fh:
            response = await client.post("/v1/media", headers=AUTH, **multipart("three.wav", fh.read(), title="Three"))
        assert response.status_code == 202, response.text
        events = await client.get(response.json()["events_url"], headers=AUTH)
        assert '"phase":"Succeeded"' in events.text.replace(" ", ""), events.text[-500:]
        media_id = response.json()["media_id"]
        transcript = (await client.get(f"/v1/media/{media_id}/transcript", headers=AUTH)).json()
        yield client, media_id, transcript


@pytest.mark.parametrize("query,passage,word", QUERIES)
async def test_library_search_links_into_the_answering_sentence(library, sample, query, passage, word):
    client, media_id, transcript = library
    response = await client.post("/v1/search", headers=AUTH, json={"query": query, "top_k": 10})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    top = hits[0]
    spoken = sample.passages[passage]
    assert top["media_id"] == media_id and top["title"] == "Three"
    assert spoken.start - EARLY <= top["seek"] <= spoken.end, (query, top, spoken)
    [sentence] = [s for s in transcript["segments"] if word in s["text"].lower()]
    assert top["seek"] == sentence["start"], (query, top["seek"], sentence)
    assert top["link"] == f"/media/{media_id}#t={top['seek']:.2f}"
    # no chunk reaches across a pause into another passage
    for hit in hits:
        assert hit["start"] <= hit["seek"] < hit["end"]
        assert sum(1 for p in sample.passages if hit["start"] < p.end and p.start - EARLY < hit["end"]) == 1, hit


async def test_the_library_page_has_an_accessible_search(library):
    client, _, _ = library
    page = (await client.get("/")).text
    assert '<form id="library-search-form"' in page and 'role="search"' in page
    assert '<label class="sr-only" for="library-query">' in page and 'id="library-query"' in page
    assert 'src="/static/library.js"' in page and "<script>" not in page  # no inline scripts (CSP)
    script = (await client.get("/static/library.js")).text
    assert '"/v1/search"' in script and "top_k: 10" in script and "h.link" in script
