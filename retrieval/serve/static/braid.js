// Braid search page: talks to the JSON API of the server that serves it (GET /info, POST /search).
// Plain DOM, no framework; text from the index goes into text nodes only (never innerHTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { info: null, result: null, current: -1, view: "fused" };
const NORM_NAMES = { minmax: "min-max", zscore: "z-score", max: "max", sum: "sum", none: "no" };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "width") node.style.width = value; // CSSOM: the page's CSP forbids style attributes
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || ["role", "tabindex", "title", "colspan", "scope", "href"].includes(key)) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// The figures shown: 4 decimals (the exact values are in data-* attributes).
function fmt(x) { return x === null || x === undefined ? "\u2013" : Number(x).toFixed(4); }
function pct(x) { return x === null || x === undefined ? "\u2013" : (100 * x).toFixed(1) + "%"; }
function retrieverClass(name) { return "r-" + (/^(bm25|sparse|sparse-if|dense|dense-bin)$/.test(name) ? name : "other"); }

function headers() {
  const h = { "content-type": "application/json" };
  const token = sessionStorage.getItem("braid-token");
  if (token) h.authorization = "Bearer " + token;
  return h;
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() } : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await response.json().catch(() => ({ detail: response.statusText }));
  if (response.status === 401 || response.status === 403) {
    $("#token-row").hidden = false;
    throw new Error(data.detail || "a bearer token is required");
  }
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function setStatus(text, isError = false) {
  const node = $("#status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// ------------------------------------------------------------------ index info and engine choice
async function loadInfo() {
  try {
    const info = await api("info");
    state.info = info;
    $("#index-info").textContent = `${info.index}: ${info.num_docs.toLocaleString()} documents \u00b7 retrievers ${info.retrievers.join(", ")}`;
    const select = $("#engine");
    select.replaceChildren();
    const pipes = Object.keys(info.pipelines);
    if (pipes.length) select.append(el("optgroup", { label: "Pipelines (fused)" }, pipes.map((p) => el("option", { value: p, text: p }))));
    select.append(el("optgroup", { label: "Retrievers" }, info.retrievers.map((r) => el("option", { value: r, text: r }))));
    select.value = info.default;
    // Filters from the documents' metadata, when the index has any (applied inside every retriever before its top-k).
    const fields = Object.entries(info.metadata || {});
    $("#filter-row").hidden = fields.length === 0;
    $("#filter-fields").textContent = fields.length ? "fields: " + fields.map(([name, kind]) => `${name} (${kind})`).join(", ") : "";
    restoreFromHash();
  } catch (err) {
    $("#index-info").textContent = "";
    setStatus(String(err.message || err), true);
  }
}

// ------------------------------------------------------------------ snippets with highlighted query terms
// Not highlighted: words too common to say why a document matched.
const STOPWORDS = new Set("a an and are as at be by for from has have in into is it its of on or that the their this to was were which with".split(" "));

function queryTerms(query) {
  const words = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => (w.length > 1 || /\p{N}/u.test(w)) && !STOPWORDS.has(w));
  return [...new Set(words)].sort((a, b) => b.length - a.length);
}

function highlighted(text, terms, width = 260) {
  const out = document.createDocumentFragment();
  if (!text) return out;
  const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = escaped.length ? new RegExp("(?<![\\p{L}\\p{N}])(" + escaped.join("|") + ")", "giu") : null;
  let start = 0;
  if (re) {
    const first = text.search(re);
    if (first > 80) start = text.lastIndexOf(" ", first - 60) + 1;
  }
  let piece = text.slice(start, start + width);
  if (start + width < text.length) piece = piece.slice(0, piece.lastIndexOf(" ") > 0 ? piece.lastIndexOf(" ") : piece.length) + " \u2026";
  if (start > 0) out.append("\u2026 ");
  if (!re) { out.append(piece); return out; }
  let last = 0;
  for (const m of piece.matchAll(re)) {
    out.append(piece.slice(last, m.index), el("mark", { text: m[0] }));
    last = m.index + m[0].length;
  }
  out.append(piece.slice(last));
  return out;
}

// ------------------------------------------------------------------ the fused list and its explanation
function explanation(hit, fusion) {
  const ex = hit.explain;
  const rows = ex.retrievers.map((p) => el("tr", {
      "data-retriever": p.name, "data-rank": p.rank === null ? "" : p.rank, "data-score": p.score === null ? "" : p.score,
      "data-normalized": p.normalized === null ? "" : p.normalized, "data-fill": p.fill === null ? "" : p.fill,
      "data-contribution": p.contribution, "data-share": p.share === null ? "" : p.share,
    },
    el("th", { scope: "row", class: retrieverClass(p.name), text: p.name }),
    el("td", { class: "rank", text: p.rank === null ? "absent" : "#" + p.rank }),
    el("td", { class: "score opt", text: fmt(p.score) }),
    el("td", { class: "normalized", text: p.rank === null && p.fill !== null ? fmt(p.fill) + "*" : fmt(p.normalized) }),
    el("td", { class: "weight opt", text: fmt(p.weight) }),
    el("td", { class: "contribution", text: fmt(p.contribution) }),
    el("td", { class: "share" },
      el("span", { class: "bar " + retrieverClass(p.name), width: `${Math.max(0, Math.min(1, p.share || 0)) * 4}rem` }), " ", pct(p.share)),
  ));
  const notes = [];
  if (fusion && fusion.method) {
    const how = fusion.method === "rrf" ? `reciprocal rank fusion (rrf_k = ${fusion.rrf_k ?? 60}): contribution = weight / (rrf_k + rank)`
      : `${fusion.method} fusion of ${NORM_NAMES[fusion.norm || "minmax"] || fusion.norm} normalised scores: contribution = weight \u00d7 normalised score`;
    notes.push(how + "; the contributions add up to the fused score.");
    if (ex.retrievers.some((p) => p.rank === null && p.fill !== null)) notes.push("* not in that retriever's list: counted as the list's lowest normalised score (missing = " + (fusion.missing || "min") + ").");
    if (fusion.rescored) notes.push("A rescoring stage then reordered the head: the hit's final score is " + fmt(hit.score) + ".");
  } else {
    notes.push("One retriever, no fusion: the score is the retriever's own.");
  }
  return el("details", { class: "why", "data-fused": ex.fused_score },
    el("summary", { text: "Why here? fused score " + fmt(ex.fused_score) }),
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Retriever", "Rank", "Score", "Normalised", "Weight", "Contribution", "Share"].map((h, i) => el("th", { scope: "col", class: [2, 4].includes(i) ? "opt" : null, text: h })))),
      el("tbody", {}, rows),
      el("tfoot", {}, el("tr", {}, el("td", { text: "fused" }), el("td"), el("td", { class: "opt" }), el("td"), el("td", { class: "opt" }),
        el("td", { class: "fused", text: fmt(ex.fused_score) }), el("td", { text: "100%" }))),
    )),
    notes.map((n) => el("p", { class: "note", text: n })),
  );
}

function renderHits(result, query) {
  const terms = queryTerms(query);
  const list = $("#hits");
  list.replaceChildren();
  result.hits.forEach((hit, i) => {
    const chips = (hit.explain ? hit.explain.retrievers : []).map((p) =>
      el("span", { class: "chip " + retrieverClass(p.name) + (p.rank === null ? " absent" : ""), title: p.rank === null ? `not in ${p.name}'s list` : `rank ${p.rank} in ${p.name}`, text: p.name + " " + (p.rank === null ? "\u2013" : "#" + p.rank) }));
    list.append(el("li", { class: "hit", "data-id": hit.id, "data-rank": hit.rank, "data-score": hit.score, tabindex: -1 },
      el("h2", {}, `${hit.rank}. `, hit.title ? hit.title : el("span", { class: "muted", text: "(no title)" })),
      el("div", { class: "meta" }, el("span", { text: "id " + hit.id }), el("span", { class: "score", text: "score " + fmt(hit.score) }), el("span", { class: "chips" }, chips)),
      el("p", { class: "snippet" }, highlighted(hit.text || "", terms)),
      hit.explain ? explanation(hit, result.fusion) : null,
    ));
  });
  state.current = -1;
}

// ------------------------------------------------------------------ side by side
function renderLists(result) {
  const counts = new Map();
  for (const l of result.lists) for (const h of l.hits) counts.set(h.id, (counts.get(h.id) || 0) + 1);
  const fusedRank = new Map(result.hits.map((h) => [h.id, h.rank]));
  const box = $("#lists");
  box.replaceChildren();
  for (const l of result.lists) {
    box.append(el("section", { class: "list", "data-retriever": l.name, "aria-label": l.name },
      el("h2", { class: retrieverClass(l.name), text: l.name + (l.prf ? " (after PRF)" : "") + (result.lists.length > 1 ? ` \u00b7 weight ${l.weight}` : "") }),
      el("ol", {}, l.hits.map((h) => {
        const shared = counts.get(h.id) || 0;
        return el("li", { class: shared > 1 ? "shared" : null, "data-id": h.id, "data-shared": shared, tabindex: 0, title: h.id },
          h.title || h.id, " ", el("span", { class: "score", text: fmt(h.score) }),
          shared > 1 ? el("span", { class: "badge", title: `in ${shared} lists`, text: "\u00d7" + shared }) : null,
          fusedRank.has(h.id) ? el("span", { class: "badge", title: "rank in the fused list", text: "fused #" + fusedRank.get(h.id) }) : null);
      })),
    ));
  }
  const mark = (id, on) => box.querySelectorAll("li").forEach((li) => li.classList.toggle("hl", on && li.dataset.id === id));
  box.querySelectorAll("li").forEach((li) => {
    for (const [ev, on] of [["mouseenter", true], ["focus", true], ["mouseleave", false], ["blur", false]]) li.addEventListener(ev, () => mark(li.dataset.id, on));
  });
}

function setView(view) {
  state.view = view;
  $("#fused").hidden = view !== "fused";
  $("#side").hidden = view !== "side";
  $("#view-fused").setAttribute("aria-pressed", String(view === "fused"));
  $("#view-side").setAttribute("aria-pressed", String(view === "side"));
}

// ------------------------------------------------------------------ searching
async function search() {
  const query = $("#q").value.trim();
  if (!query) return;
  const engine = $("#engine").value;
  const k = Number($("#k").value);
  const filter = $("#filter-row").hidden ? "" : $("#filter").value.trim();
  location.hash = new URLSearchParams(filter ? { q: query, r: engine, k, f: filter } : { q: query, r: engine, k }).toString();
  setStatus("searching\u2026");
  try {
    const body = { query, k, retriever: engine, fields: true, explain: true };
    if (filter) body.filter = filter;
    const result = await api("search", body);
    state.result = result;
    renderHits(result, query);
    renderLists(result);
    setStatus(`${result.hits.length} hits from ${result.retriever} in ${result.took_ms.toFixed(1)} ms`);
  } catch (err) {
    setStatus(String(err.message || err), true);
  }
}

function restoreFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("r") && [...$("#engine").options].some((o) => o.value === params.get("r"))) $("#engine").value = params.get("r");
  if (params.get("k")) $("#k").value = params.get("k");
  if (params.get("f")) $("#filter").value = params.get("f");
  if (params.get("q")) { $("#q").value = params.get("q"); search(); }
}

function move(delta) {
  const hits = [...document.querySelectorAll("#hits .hit")];
  if (!hits.length) return;
  state.current = Math.max(0, Math.min(hits.length - 1, state.current + delta));
  hits.forEach((h, i) => h.classList.toggle("current", i === state.current));
  hits[state.current].focus();
  hits[state.current].scrollIntoView({ block: "nearest" });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  $("#engine").addEventListener("change", () => { if ($("#q").value.trim()) search(); });
  $("#k").addEventListener("change", () => { if ($("#q").value.trim()) search(); });
  $("#view-fused").addEventListener("click", () => setView("fused"));
  $("#view-side").addEventListener("click", () => setView("side"));
  $("#token").addEventListener("change", () => { sessionStorage.setItem("braid-token", $("#token").value.trim()); loadInfo(); });
  document.addEventListener("keydown", (ev) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (ev.key === "Escape" && typing) { document.activeElement.blur(); return; }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "/") { ev.preventDefault(); $("#q").focus(); $("#q").select(); }
    else if (ev.key === "j" || ev.key === "ArrowDown") { ev.preventDefault(); move(1); }
    else if (ev.key === "k" || ev.key === "ArrowUp") { ev.preventDefault(); move(-1); }
    else if ((ev.key === "e" || ev.key === "Enter") && state.current >= 0 && document.activeElement.classList.contains("hit")) {
      ev.preventDefault();
      const d = document.querySelectorAll("#hits .hit")[state.current].querySelector("details");
      if (d) d.open = !d.open;
    } else if (ev.key === "s") setView(state.view === "fused" ? "side" : "fused");
  });
  loadInfo();
});
