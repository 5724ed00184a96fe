// Media page: player (signed range-request stream), transcript / search hits / citations that seek.
"use strict";
(() => {
  const { api, flash, el, mmss } = Mediaflow;
  const mediaId = document.querySelector(".media-page").dataset.mediaId;
  const player = document.getElementById("player");

  function seek(seconds) {
    player.currentTime = seconds;
    history.replaceState(null, "", `#t=${seconds.toFixed(2)}`);
    player.play().catch(() => {});  // autoplay may be refused; the position is what matters
  }

  const seekButton = (start, text, extra) =>
    el("button", { type: "button", class: "seek", "data-start": start, onclick: () => seek(start),
                   "aria-label": `Play from ${mmss(start)}: ${text}` },
      el("span", { class: "time" }, mmss(start)), el("span", {}, text), ...(extra ? [extra] : []));

  async function load() {
    const media = await api(`/v1/media/${mediaId}`);
    document.getElementById("media-heading").textContent = media.title;
    document.title = `${media.title} · Mediaflow`;
    const language = media.language
      ? `${media.language_name || media.language} (${media.language_probability == null ? "given"
          : `detected, ${Math.round(media.language_probability * 100)} %`}) · ` : "";
    document.getElementById("media-meta").textContent =
      media.duration ? `Duration ${mmss(media.duration)} · ${language}${media.stages_done.length} of 7 stages done` : "";
    if (media.language) document.getElementById("transcript").lang = media.language;  // read aloud in its language
    player.src = media.stream_url;
    const fromHash = /t=([\d.]+)/.exec(location.hash);
    if (fromHash) player.addEventListener("loadedmetadata", () => { player.currentTime = parseFloat(fromHash[1]); }, { once: true });

    const downloads = document.getElementById("downloads");
    for (const fmt of ["srt", "vtt", "txt"]) {
      downloads.append(el("a", { href: "#", onclick: (e) => { e.preventDefault(); download(fmt); } }, fmt.toUpperCase()));
    }
    try {
      const transcript = await api(`/v1/media/${mediaId}/transcript`);
      const list = document.getElementById("transcript");
      list.replaceChildren(...transcript.segments.map((s) => el("li", {}, seekButton(s.start, s.text.trim()))));
    } catch (e) {
      document.getElementById("transcript").replaceChildren(el("li", { class: "muted" }, e.message));
    }
    try {
      const summary = await api(`/v1/media/${mediaId}/summary`);
      const p = document.getElementById("summary");
      p.textContent = summary.text;
      p.classList.remove("muted");
    } catch (e) { /* no summary (yet): the placeholder says so */ }
  }

  async function download(fmt) {
    const text = await api(`/v1/media/${mediaId}/transcript?format=${fmt}`);
    const link = el("a", { href: URL.createObjectURL(new Blob([text])), download: `${mediaId}.${fmt}` });
    link.click();
  }

  // Highlight the transcript line being played.
  player.addEventListener("timeupdate", () => {
    const lines = [...document.querySelectorAll("#transcript .seek")];
    let current = null;
    for (const line of lines) if (parseFloat(line.dataset.start) <= player.currentTime) current = line;
    lines.forEach((line) => line.classList.toggle("active", line === current));
  });

  document.getElementById("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const query = document.getElementById("search-query").value.trim();
    const hits = document.getElementById("hits");
    try {
      const result = await api("/v1/search", { method: "POST", body: { query, media_id: mediaId, top_k: 5 } });
      hits.replaceChildren(...result.hits.map((h) =>
        el("li", {}, seekButton(h.seek, h.text, el("span", { class: "score" }, h.score.toFixed(2))))));
      if (!result.hits.length) hits.replaceChildren(el("li", { class: "muted" }, "No hits."));
    } catch (err) { flash(err.message); }
  });

  document.getElementById("ask-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const question = document.getElementById("ask-question").value.trim();
    const box = document.getElementById("answer");
    box.replaceChildren(el("p", { class: "muted" }, "Thinking…"));
    try {
      const answer = await api("/v1/ask", { method: "POST", body: { question, media_id: mediaId } });
      if (!answer.grounded) {  // the fixed "not answered" message: no sources to show
        box.replaceChildren(el("p", { class: "answer muted" }, answer.answer));
        return;
      }
      // Each supported sentence, then the numbers of the sources that support it.
      const text = answer.sentences.filter((s) => s.kept)
        .map((s) => s.text + s.citations.map((n) => ` [${n}]`).join("")).join(" ");
      const left = answer.dropped
        ? [el("p", { class: "muted" }, `${answer.dropped} sentence${answer.dropped > 1 ? "s" : ""} left out: the excerpts do not support ${answer.dropped > 1 ? "them" : "it"}.`)]
        : [];
      box.replaceChildren(el("p", { class: "answer" }, text),
        el("ol", { class: "hits", "aria-label": "Sources" },
          ...answer.citations.map((c, i) => el("li", {}, seekButton(c.seek, c.quote || c.text,
            el("span", { class: "score" }, `[${i + 1}]`))))),
        ...left);
    } catch (err) { box.replaceChildren(); flash(err.message); }
  });

  load().catch((e) => flash(e.message));
})();
