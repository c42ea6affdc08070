// llm-bridge console: plain JavaScript, no framework, no build step. It talks only to the
// gateway's admin API with the session cookie; the CSRF token lives in this page's memory.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const PAGES = ["overview", "keys", "usage", "providers", "live"];
  let csrf = null;          // the session's CSRF token (memory only)
  let live = null;          // the live view's EventSource
  let keysCache = [];
  let editing = null;       // the key being edited, or null when creating

  // ---------- helpers ----------
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const nf = new Intl.NumberFormat("en-US");
  const fmt = (n) => (n === null || n === undefined ? "–" : nf.format(Math.round(n)));
  const fmtCost = (c) => (c === null || c === undefined ? "–" : "$" + Number(c).toFixed(c >= 100 ? 0 : 4));
  const fmtMs = (n) => (n === null || n === undefined ? "–" : nf.format(Math.round(n)) + " ms");
  const fmtPct = (r) => (r === null || r === undefined ? "–" : (r * 100).toFixed(r < 0.1 ? 2 : 1) + " %");
  const fmtDate = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "–");
  function compact(n) {
    if (n === null || n === undefined) return "";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n * 100) / 100);
  }
  function toast(text) {
    const t = $("#toast");
    t.textContent = text;
    t.classList.add("on");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove("on"), 2500);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }
  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (method !== "GET" && csrf) headers["x-csrf-token"] = csrf;
    const r = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    const text = await r.text();
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (r.status === 401 && path !== "/console/session") {
      signedOut("Your session ended: sign in again.");
      throw new ApiError(r.status, data);
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // ---------- charts (inline SVG) ----------
  const W = 560, H = 190, PL = 58, PR = 8, PT = 10, PB = 24;
  function svg(tag, attrs = {}) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }
  // series: [{name, cls, values, kind: "bar" | "line"}], labels: x labels
  function chart(container, labels, series, opts = {}) {
    container.textContent = "";
    const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    const max = Math.max(opts.min || 0, ...all, 0) || 1;
    const n = Math.max(labels.length, 1);
    const cw = (W - PL - PR) / n;
    const y = (v) => PT + (H - PT - PB) * (1 - v / max);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "chart" });
    const title = svg("title");
    title.textContent = opts.label || "";
    root.append(title);
    for (const f of [0, 0.5, 1]) {
      const yy = y(max * f);
      root.append(svg("line", { x1: PL, x2: W - PR, y1: yy, y2: yy, class: "axis" }));
      const t = svg("text", { x: PL - 4, y: yy + 4, "text-anchor": "end" });
      t.textContent = opts.format ? opts.format(max * f) : compact(max * f);
      root.append(t);
    }
    const step = Math.max(1, Math.ceil(n / 6));
    labels.forEach((l, i) => {
      if (i % step !== 0) return;
      const t = svg("text", { x: PL + cw * i + cw / 2, y: H - 6, "text-anchor": "middle" });
      t.textContent = l;
      root.append(t);
    });
    const bars = series.filter((s) => s.kind !== "line");
    bars.forEach((s, si) => {
      const bw = Math.max(1, (cw * 0.8) / bars.length);
      s.values.forEach((v, i) => {
        if (!v) return;
        const x = PL + cw * i + cw * 0.1 + bw * si;
        const r = svg("rect", { x, y: y(v), width: bw, height: Math.max(0.5, H - PB - y(v)), class: s.cls });
        const tt = svg("title");
        tt.textContent = `${labels[i]}: ${s.name} ${opts.format ? opts.format(v) : fmt(v)}`;
        r.append(tt);
        root.append(r);
      });
    });
    for (const s of series.filter((s) => s.kind === "line")) {
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        d += (d ? " L" : "M") + (PL + cw * i + cw / 2).toFixed(1) + " " + y(v).toFixed(1);
      });
      if (d) root.append(svg("path", { d, class: "line " + s.cls }));
      // A dot per point: a bucket alone still shows.
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const c = svg("circle", { cx: (PL + cw * i + cw / 2).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: s.cls });
        const tt = svg("title");
        tt.textContent = `${labels[i]}: ${s.name} ${opts.format ? opts.format(v) : fmt(v)}`;
        c.append(tt);
        root.append(c);
      });
    }
    container.append(root);
    if (series.length > 1 || opts.legend) {
      container.append(el("div", { class: "legend" }, series.map((s) => el("span", {}, el("i", { class: s.cls }), s.name))));
    }
  }

  // ---------- sign in / out ----------
  function signedOut(message) {
    csrf = null;
    if (live) { live.close(); live = null; }
    $("#nav").hidden = true;
    showPage("signin");
    $("#signin-error").textContent = message || "";
    $("#signin-key").focus();
  }
  async function checkSession() {
    try {
      const s = await api("GET", "/console/session");
      csrf = s.csrf_token;
      return true;
    } catch { return false; }
  }
  $("#signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#signin-key");
    const key = input.value;
    input.value = "";
    $("#signin-error").textContent = "";
    try {
      const s = await api("POST", "/console/session", { key });
      csrf = s.csrf_token;
      $("#nav").hidden = false;
      if (!PAGES.includes(location.hash.slice(1))) location.hash = "#overview"; // routes on hashchange
      else route();
    } catch (e) {
      $("#signin-error").textContent = e.status === 429
        ? "Too many wrong keys: wait a minute and try again."
        : "Sign-in refused: " + e.message;
      input.focus();
    }
  });
  $("#sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/console/session"); } catch { /* signed out anyway */ }
    signedOut("Signed out.");
  });

  // ---------- routing ----------
  function showPage(name) {
    for (const s of $$(".page")) s.hidden = s.id !== "page-" + name;
    for (const a of $$("nav a")) {
      if (a.dataset.page === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }
  async function route() {
    if (!csrf) return signedOut();
    const name = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
    if (name !== "live" && live) { live.close(); live = null; setLiveState("disconnected"); }
    showPage(name);
    document.title = name[0].toUpperCase() + name.slice(1) + " · llm-bridge console";
    try {
      await ({ overview: loadOverview, keys: loadKeys, usage: loadUsage, providers: loadProviders, live: startLive })[name]();
    } catch (e) {
      if (e.status !== 401) toast("Could not load: " + e.message);
    }
  }
  window.addEventListener("hashchange", () => { route(); $("#main").focus({ preventScroll: true }); });

  // ---------- overview ----------
  function stat(label, value, id) {
    return el("div", { class: "stat", id }, el("div", { class: "v", text: value }), el("div", { class: "k", text: label }));
  }
  function table(container, head, rows, numeric = []) {
    const t = container.tagName === "TABLE" ? container : el("table");
    const caption = t.querySelector("caption");
    t.textContent = "";
    if (caption) t.append(caption);
    t.append(el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { scope: "col", class: numeric.includes(i) ? "num" : null, text: h })))));
    const tb = el("tbody");
    if (!rows.length) tb.append(el("tr", {}, el("td", { colspan: head.length, class: "muted", text: "Nothing yet." })));
    for (const r of rows) {
      const tr = r instanceof Node ? r : el("tr", {}, r.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : null }, c)));
      tb.append(tr);
    }
    t.append(tb);
    if (container !== t) { container.textContent = ""; container.append(t); }
    return t;
  }
  async function loadOverview() {
    const range = ($("#overview-range input:checked") || {}).value || "day";
    const o = await api("GET", "/admin/overview?range=" + range);
    const t = o.total;
    $("#overview-stats").replaceChildren(
      stat("Requests", fmt(t.requests), "stat-requests"),
      stat("Tokens", fmt(t.total_tokens), "stat-tokens"),
      stat("Cost", fmtCost(t.cost), "stat-cost"),
      stat("Error rate", fmtPct(t.error_rate), "stat-errors"),
      stat("Latency p50 / p95", `${fmt(t.latency_p50_ms)} / ${fmt(t.latency_p95_ms)} ms`, "stat-latency"),
      stat("TTFT p50 / p95", `${fmt(t.ttft_p50_ms)} / ${fmt(t.ttft_p95_ms)} ms`, "stat-ttft"),
    );
    const labels = o.buckets.map((b) => {
      const d = new Date(b.start_ms);
      return range === "week"
        ? `${d.getUTCMonth() + 1}/${d.getUTCDate()} ${String(d.getUTCHours()).padStart(2, "0")}h`
        : `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
    });
    const col = (k) => o.buckets.map((b) => b[k]);
    chart($("#chart-requests"), labels, [
      { name: "requests", cls: "s1", values: col("requests") },
      { name: "errors", cls: "s2", values: col("errors") },
    ], { label: "Requests and errors per bucket" });
    chart($("#chart-tokens"), labels, [
      { name: "prompt", cls: "s1", values: col("prompt_tokens") },
      { name: "completion", cls: "s3", values: col("completion_tokens") },
    ], { label: "Tokens per bucket" });
    chart($("#chart-latency"), labels, [
      { name: "p50", cls: "s1", values: col("latency_p50_ms"), kind: "line" },
      { name: "p95", cls: "s2", values: col("latency_p95_ms"), kind: "line" },
    ], { label: "Latency p50 and p95 per bucket, ms" });
    chart($("#chart-ttft"), labels, [
      { name: "p50", cls: "s1", values: col("ttft_p50_ms"), kind: "line" },
      { name: "p95", cls: "s2", values: col("ttft_p95_ms"), kind: "line" },
    ], { label: "Time to first token p50 and p95 per bucket, ms" });
    chart($("#chart-cost"), labels, [{ name: "cost", cls: "s3", values: col("cost") }],
      { label: "Cost per bucket", format: (v) => "$" + (v === 0 ? "0" : v >= 1 ? compact(v) : v.toPrecision(2)) });
    chart($("#chart-errors"), labels, [{ name: "error rate", cls: "s2", values: col("error_rate"), kind: "line" }],
      { label: "Error rate per bucket", min: 0.01, format: (v) => (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%" });
    const top = (rows) => rows.map((r) => [r.name, fmt(r.requests), fmt(r.errors), fmt(r.total_tokens), fmtCost(r.cost)]);
    table($("#top-keys"), ["Key", "Requests", "Errors", "Tokens", "Cost"], top(o.top_keys), [1, 2, 3, 4]);
    table($("#top-models"), ["Model", "Requests", "Errors", "Tokens", "Cost"], top(o.top_models), [1, 2, 3, 4]);
  }
  $("#overview-range").addEventListener("change", () => loadOverview().catch((e) => toast(e.message)));

  // ---------- keys ----------
  const limitText = (k) => [k.rpm ? `${fmt(k.rpm)} rpm` : null, k.tpm ? `${fmt(k.tpm)} tpm` : null].filter(Boolean).join(", ") || "none";
  function budgetText(b, f) {
    if (!b) return "none";
    const parts = [["day", b.day], ["month", b.month], ["total", b.total]].filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${f(v)}/${k}`);
    return parts.join(", ") || "none";
  }
  async function loadKeys() {
    const [list, usage] = await Promise.all([
      api("GET", "/admin/keys"),
      api("GET", "/admin/usage?group_by=key&from=30d").catch(() => ({ data: [] })),
    ]);
    keysCache = list.data;
    const req = Object.fromEntries(usage.data.map((g) => [g.group, g]));
    const rows = list.data.map((k) => {
      const u = req[k.name] || {};
      const spent = k.spent_tokens || {};
      const state = k.revoked ? el("span", { class: "pill bad", text: "revoked" })
        : k.expires_at && k.expires_at < Date.now() ? el("span", { class: "pill warn", text: "expired" })
        : el("span", { class: "pill ok", text: "active" });
      const actions = k.revoked ? el("span", { class: "muted", text: "–" }) : el("div", { class: "row" },
        el("button", { type: "button", class: "small secondary", "aria-label": `Edit ${k.name}`, onclick: () => openForm(k) }, "Edit"),
        el("button", { type: "button", class: "small danger", "aria-label": `Revoke ${k.name}`, onclick: () => revoke(k) }, "Revoke"));
      return el("tr", { class: k.revoked ? "revoked" : null, "data-key": k.name },
        el("td", {}, el("strong", { text: k.name }), el("div", { class: "muted small" }, el("code", { text: k.key_prefix + "…" }))),
        el("td", {}, state),
        el("td", { text: (k.models && k.models.length) ? k.models.join(", ") : "all" }),
        el("td", { text: limitText(k) }),
        el("td", { text: budgetText(k.budget_tokens, fmt) + (k.budget_cost && (k.budget_cost.day || k.budget_cost.month || k.budget_cost.total) ? "; " + budgetText(k.budget_cost, fmtCost) : "") }),
        el("td", { class: "num", text: fmt(u.requests || 0) }),
        el("td", { class: "num", text: `${fmt(spent.day || 0)} / ${fmt(spent.total || 0)}` }),
        el("td", { text: fmtDate(k.expires_at) }),
        el("td", { text: fmtDate(k.last_used_at) }),
        el("td", {}, actions));
    });
    table($("#keys-table"), ["Key", "State", "Models", "Limits", "Budgets", "Requests (30 d)", "Tokens today / total", "Expires", "Last used", "Actions"], rows, [5, 6]);
  }
  function openForm(key) {
    editing = key || null;
    const f = $("#key-form");
    f.reset();
    f.hidden = false;
    $("#kf-error").textContent = "";
    $("#key-form-title").textContent = key ? `Change ${key.name}` : "Create a key";
    $("#kf-submit").textContent = key ? "Save" : "Create";
    $("#kf-name").disabled = !!key;
    if (key) {
      $("#kf-name").value = key.name;
      $("#kf-models").value = (key.models || []).join(", ");
      $("#kf-rpm").value = key.rpm ?? "";
      $("#kf-tpm").value = key.tpm ?? "";
      $("#kf-bt-day").value = key.budget_tokens?.day ?? "";
      $("#kf-bt-month").value = key.budget_tokens?.month ?? "";
      $("#kf-bt-total").value = key.budget_tokens?.total ?? "";
      $("#kf-bc-month").value = key.budget_cost?.month ?? "";
      $("#kf-expires").value = key.expires_at ? "keep" : "";
    }
    (key ? $("#kf-models") : $("#kf-name")).focus();
  }
  $("#key-new").addEventListener("click", () => openForm(null));
  $("#kf-cancel").addEventListener("click", () => { $("#key-form").hidden = true; $("#key-new").focus(); });
  $("#key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const num = (id) => { const v = $(id).value.trim(); return v === "" ? null : Number(v); };
    const body = {
      models: $("#kf-models").value.split(",").map((s) => s.trim()).filter(Boolean),
      rpm: num("#kf-rpm"), tpm: num("#kf-tpm"),
      budget_tokens: { day: num("#kf-bt-day"), month: num("#kf-bt-month"), total: num("#kf-bt-total") },
      budget_cost: { month: num("#kf-bc-month") },
    };
    const exp = $("#kf-expires").value.trim();
    if (exp && exp !== "keep") body.expires_in = exp;
    else if (!exp) body.expires_at = null;
    $("#kf-error").textContent = "";
    try {
      if (editing) {
        await api("PATCH", "/admin/keys/" + encodeURIComponent(editing.name), body);
        toast(`Saved ${editing.name}`);
      } else {
        body.name = $("#kf-name").value.trim();
        for (const k of ["rpm", "tpm"]) if (body[k] === null) delete body[k];
        if (body.expires_at === null) delete body.expires_at;
        const created = await api("POST", "/admin/keys", body);
        $("#key-secret-name").textContent = created.name;
        $("#key-secret-value").value = created.key;
        $("#key-secret-copied").textContent = "";
        $("#key-secret").hidden = false;
      }
      $("#key-form").hidden = true;
      await loadKeys();
      if (!editing) $("#key-secret-value").select();
    } catch (e) {
      $("#kf-error").textContent = e.message;
    }
  });
  $("#key-secret-copy").addEventListener("click", async () => {
    const v = $("#key-secret-value");
    try {
      await navigator.clipboard.writeText(v.value);
    } catch {
      v.select();
      document.execCommand && document.execCommand("copy");
    }
    $("#key-secret-copied").textContent = "Copied to the clipboard.";
  });
  $("#key-secret-close").addEventListener("click", () => {
    $("#key-secret-value").value = "";
    $("#key-secret").hidden = true;
    $("#key-new").focus();
  });
  function confirmDialog(text, yes) {
    const d = $("#confirm");
    $("#confirm-text").textContent = text;
    $("#confirm-yes").textContent = yes;
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue === "yes"), { once: true });
      d.returnValue = "";
      d.showModal();
    });
  }
  async function revoke(k) {
    if (!(await confirmDialog(`Revoke the key "${k.name}"? Clients using it get 401 at once. This cannot be undone.`, "Revoke"))) return;
    try {
      await api("DELETE", "/admin/keys/" + encodeURIComponent(k.name));
      toast(`Revoked ${k.name}`);
      await loadKeys();
    } catch (e) { toast("Could not revoke: " + e.message); }
  }

  // ---------- usage ----------
  const day = (d) => d.toISOString().slice(0, 10);
  function usageParams() {
    const from = $("#u-from").value, to = $("#u-to").value;
    const end = new Date(to + "T00:00:00Z");
    end.setUTCDate(end.getUTCDate() + 1);
    const p = new URLSearchParams({ from: from + "T00:00:00Z", to: end.toISOString().replace(".000", ""), group_by: $("#u-group").value });
    const key = $("#u-key").value.trim();
    if (key) p.set("key", key);
    return p;
  }
  async function loadUsage() {
    if (!$("#u-from").value) {
      const now = new Date();
      $("#u-to").value = day(now);
      $("#u-from").value = day(new Date(now.getTime() - 29 * 864e5));
    }
    const p = usageParams();
    const r = await api("GET", "/admin/usage?" + p);
    p.set("format", "csv");
    $("#u-csv").href = "/admin/usage?" + p;
    const g = $("#u-group").value;
    $("#usage-chart-title").textContent = `Tokens per ${g}`;
    chart($("#chart-usage"), r.data.map((x) => (g === "day" ? x.group.slice(5) : x.group)), [
      { name: "prompt", cls: "s1", values: r.data.map((x) => x.prompt_tokens) },
      { name: "completion", cls: "s3", values: r.data.map((x) => x.completion_tokens) },
    ], { label: `Tokens per ${g}` });
    const row = (x) => [x.group, fmt(x.requests), fmt(x.errors), fmt(x.prompt_tokens), fmt(x.completion_tokens), fmt(x.cached_tokens), fmt(x.total_tokens), fmtCost(x.cost)];
    const t = table($("#usage-table"), [g[0].toUpperCase() + g.slice(1), "Requests", "Errors", "Prompt", "Completion", "Cached", "Total tokens", "Cost"], r.data.map(row), [1, 2, 3, 4, 5, 6, 7]);
    if (r.data.length) {
      const tot = row(r.total);
      tot[0] = "Total";
      t.append(el("tfoot", {}, el("tr", {}, tot.map((c, i) => el(i ? "td" : "th", { class: i ? "num" : null, scope: i ? null : "row", text: c })))));
    }
  }
  $("#usage-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadUsage().catch((e) => toast(e.message)); });

  // ---------- providers ----------
  function healthPill(t) {
    return t.state === "cooldown"
      ? el("span", { class: "pill bad", text: `cooldown ${Math.ceil(t.cooldown_remaining_seconds || 0)} s` })
      : el("span", { class: "pill ok", text: "ready" });
  }
  function targetsTable(targets, weights) {
    const head = ["Target", "Health", "Failures in a row", "Latency", "Requests (1 h)", "Errors (1 h)"];
    if (weights) head.push("Weight");
    const wrap = el("div", { class: "scroll" });
    table(wrap, head, targets.map((t) => {
      const r = [el("code", { text: t.target }), healthPill(t), fmt(t.consecutive_failures), fmtMs(t.latency_ms), fmt(t.requests_last_hour), fmt(t.errors_last_hour)];
      if (weights) r.push(fmt(t.weight));
      return r;
    }), [2, 3, 4, 5, 6]);
    return wrap;
  }
  async function loadProviders() {
    const s = await api("GET", "/admin/status");
    const body = $("#providers-body");
    body.textContent = "";
    body.append(el("h2", { text: "Providers" }));
    for (const p of s.providers) {
      body.append(el("div", { class: "card provider" },
        el("h2", {}, p.name, el("span", { class: "pill", text: p.adapter })),
        el("dl", { class: "kv" },
          el("dt", { text: "Base URL" }), el("dd", {}, el("code", { text: p.base_url })),
          el("dt", { text: "Models" }), el("dd", { text: p.models.join(", ") || "–" }),
          el("dt", { text: "Keys" }), el("dd", {}, p.key_prefixes.length ? p.key_prefixes.map((k) => el("code", { text: k + " " })) : "none (from the environment at start, or none needed)"),
          el("dt", { text: "Proxy" }), el("dd", { text: p.proxy || "direct" })),
        p.targets.length ? targetsTable(p.targets) : el("p", { class: "muted small", text: "Passes any model through (\"*\")." })));
    }
    body.append(el("h2", { text: "Routes" }));
    if (!s.routes.length) body.append(el("p", { class: "muted", text: "No routes configured." }));
    for (const r of s.routes) {
      body.append(el("div", { class: "card" }, el("h2", {}, r.alias, el("span", { class: "pill", text: r.strategy })),
        targetsTable(r.targets, r.strategy === "weighted")));
    }
    body.append(el("h2", { text: "Proxies" }));
    if (s.proxies.length) {
      const wrap = el("div", { class: "card scroll" });
      table(wrap, ["For", "Proxy", "Credentials"], s.proxies.map((p) => [p.scheme + "://", el("code", { text: p.url }), p.has_credentials ? "set (hidden)" : "none"]));
      body.append(wrap);
    } else {
      body.append(el("p", { class: "muted", text: "No proxy configured in proxy:." }));
    }
  }
  $("#providers-refresh").addEventListener("click", () => loadProviders().catch((e) => toast(e.message)));

  // ---------- live ----------
  function setLiveState(s) {
    const e = $("#live-state");
    e.textContent = s;
    e.className = "pill " + (s === "connected" ? "ok" : s === "reconnecting" ? "warn" : "");
  }
  function startLive() {
    if (live) live.close();
    const p = new URLSearchParams();
    for (const [k, id] of [["key", "#l-key"], ["model", "#l-model"], ["status", "#l-status"]]) {
      const v = $(id).value.trim();
      if (v) p.set(k, v);
    }
    setLiveState("connecting");
    live = new EventSource("/admin/events?" + p);
    live.addEventListener("open", () => setLiveState("connected"));
    live.addEventListener("error", async () => {
      setLiveState("reconnecting");
      if (!(await checkSession())) signedOut("Your session ended: sign in again.");
    });
    live.addEventListener("access", (m) => {
      const e = JSON.parse(m.data);
      const tb = $("#live-table tbody");
      const bad = e.status >= 400;
      tb.prepend(el("tr", { "data-request-id": e.request_id },
        el("td", { text: e.time.slice(11, 19) }),
        el("td", { text: e.key || "–" }),
        el("td", {}, el("code", { text: e.model || "–" })),
        el("td", {}, el("span", { class: "pill " + (bad ? "bad" : "ok"), text: String(e.status) })),
        el("td", { text: e.outcome + (e.error ? ": " + e.error : "") }),
        el("td", { class: "num", text: fmt(e.latency_ms) }),
        el("td", { class: "num", text: fmt(e.prompt_tokens + e.completion_tokens) }),
        el("td", {}, el("code", { class: "small", text: e.request_id }))));
      while (tb.rows.length > 200) tb.deleteRow(-1);
    });
  }
  $("#live-form").addEventListener("submit", (ev) => { ev.preventDefault(); $("#live-table tbody").textContent = ""; startLive(); });
  $("#live-clear").addEventListener("click", () => { $("#live-table tbody").textContent = ""; });

  // ---------- start ----------
  (async () => {
    if (await checkSession()) {
      $("#nav").hidden = false;
      route();
    } else {
      signedOut();
    }
  })();
})();
