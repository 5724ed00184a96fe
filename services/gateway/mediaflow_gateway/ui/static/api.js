// Shared helpers: the API key (kept in localStorage), JSON calls, SSE over fetch, time format.
"use strict";
const Mediaflow = (() => {
  const KEY = "mediaflow.apiKey";
  const authHeaders = () => {
    const key = localStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  };

  async function api(path, { method = "GET", body } = {}) {
    const headers = { ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 204) return null;
    const data = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new Error(data?.error?.message || `${response.status} ${response.statusText}`);
    return data;
  }

  // EventSource cannot send an Authorization header, so read the stream with fetch.
  async function events(path, onEvent) {
    const response = await fetch(path, { headers: { ...authHeaders(), Accept: "text/event-stream" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  }

  const mmss = (seconds) => {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${two(m)}:${two(r)}` : `${two(m)}:${two(r)}`;
  };

  function flash(message) {
    const el = document.getElementById("flash");
    el.textContent = message;
    el.hidden = !message;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  const keyForm = document.getElementById("key-form");
  if (keyForm) {
    const input = document.getElementById("api-key");
    input.value = localStorage.getItem(KEY) || "";
    keyForm.addEventListener("submit", (e) => {
      e.preventDefault();
      localStorage.setItem(KEY, input.value.trim());
      location.reload();
    });
  }

  return { api, events, mmss, flash, el, authHeaders };
})();
