// Library page: search across every media (hits grouped by media, each a deep link to the
// media page at the sentence that matches), upload with progress, live job list (SSE per
// running job), media list.
"use strict";
(() => {
  const { api, events, flash, el, mmss, authHeaders } = Mediaflow;
  const jobsBody = document.querySelector("#jobs tbody");
  const jobs = new Map();
  const following = new Set();

  function renderJobs() {
    jobsBody.replaceChildren();
    if (!jobs.size) {
      jobsBody.append(el("tr", { class: "empty" }, el("td", { colspan: 4 }, "No jobs yet.")));
      return;
    }
    const sorted = [...jobs.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
    for (const job of sorted) {
      const title = job.phase === "Succeeded"
        ? el("a", { href: `/media/${job.media_id}` }, job.title || job.media_id)
        : document.createTextNode(job.title || job.media_id);
      const bar = el("progress", { max: 1, value: job.progress, "aria-label": `Progress of ${job.title || job.media_id}` });
      jobsBody.append(el("tr", { "data-job": job.id },
        el("td", {}, title),
        el("td", { class: `phase phase-${job.phase}` }, job.phase),
        el("td", {}, job.phase === "Failed" ? job.message || "" : job.stage || ""),
        el("td", {}, bar, ` ${Math.round(job.progress * 100)} %`)));
    }
  }

  function follow(jobId) {
    if (following.has(jobId)) return;
    following.add(jobId);
    events(`/v1/jobs/${jobId}/events`, (job) => {
      jobs.set(job.id, job);
      renderJobs();
      if (job.phase === "Succeeded") loadMedia();
    }).catch((e) => flash(e.message)).finally(() => following.delete(jobId));
  }

  async function loadJobs() {
    const { items } = await api("/v1/jobs");
    for (const job of items) {
      jobs.set(job.id, job);
      if (job.phase === "Pending" || job.phase === "Running") follow(job.id);
    }
    renderJobs();
  }

  async function loadMedia() {
    const { items } = await api("/v1/media");
    const list = document.getElementById("media");
    list.replaceChildren();
    if (!items.length) list.append(el("li", { class: "muted" }, "Nothing here yet."));
    for (const m of items) {
      const meta = m.duration ? ` · ${mmss(m.duration)}` : "";
      list.append(el("li", {}, el("a", { href: m.page_url }, m.title), el("span", { class: "muted" }, meta)));
    }
  }

  // One search over the whole library; hits come best first, so media are in the order of
  // their best hit. Each hit links to its media page at ``seek`` (the page reads #t=).
  const searchForm = document.getElementById("library-search-form");
  searchForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const query = document.getElementById("library-query").value.trim();
    const results = document.getElementById("library-hits");
    const status = document.getElementById("library-search-status");
    if (!query) return;
    status.textContent = "Searching…";
    flash("");
    try {
      const { hits } = await api("/v1/search", { method: "POST", body: { query, top_k: 10 } });
      const groups = new Map();
      for (const h of hits) {
        if (!groups.has(h.media_id)) groups.set(h.media_id, { title: h.title || h.media_id, hits: [] });
        groups.get(h.media_id).hits.push(h);
      }
      results.replaceChildren(...[...groups.entries()].map(([mediaId, group], n) => {
        const headingId = `library-hits-${n}`;
        return el("section", { class: "hit-group", "data-media": mediaId, "aria-labelledby": headingId },
          el("h3", { id: headingId }, group.title),
          el("ol", { class: "hits" }, ...group.hits.map((h) => el("li", {},
            el("a", { class: "seek", href: h.link, "data-seek": h.seek,
                      "aria-label": `${group.title}, play from ${mmss(h.seek)}: ${h.text}` },
              el("span", { class: "time" }, `▶ ${mmss(h.seek)}`), el("span", {}, h.text),
              el("span", { class: "score" }, h.score.toFixed(2)))))));
      }));
      status.textContent = hits.length
        ? `${hits.length} hit${hits.length === 1 ? "" : "s"} in ${groups.size} media.`
        : "No hits.";
    } catch (err) {
      status.textContent = "";
      flash(err.message);
    }
  });

  const form = document.getElementById("upload-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = document.getElementById("file").files[0];
    if (!file) return;
    const data = new FormData();
    const title = document.getElementById("title").value.trim();
    if (title) data.append("title", title);
    data.append("file", file);  // after the fields: the server streams the file as it comes
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    bar.hidden = false;
    bar.value = 0;
    flash("");
    // XMLHttpRequest: fetch() has no upload progress events.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/media");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = ev.loaded / ev.total; };
    xhr.onload = () => {
      const body = JSON.parse(xhr.responseText || "{}");
      // 202: a new job; 200: these bytes were uploaded before, and this is their job.
      if (xhr.status !== 202 && xhr.status !== 200) {
        flash(body.error?.message || `upload failed (${xhr.status})`);
        status.textContent = "";
        return;
      }
      status.textContent = body.existing ? "Already uploaded: showing its job." : "Uploaded; processing…";
      form.reset();
      jobs.set(body.job_id, { id: body.job_id, media_id: body.media_id, title: title || file.name, phase: "Pending", progress: 0 });
      renderJobs();
      follow(body.job_id);
    };
    xhr.onerror = () => flash("upload failed: network error");
    status.textContent = "Uploading…";
    xhr.send(data);
  });

  loadJobs().catch((e) => flash(e.message));
  loadMedia().catch((e) => flash(e.message));
})();
