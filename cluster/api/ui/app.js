// The coordinator dashboard: plain ES module, no build step, no library.
// It talks to the node that served it (any node: reads are ?stale=true, from
// that node's replica, and the event stream is the node's own), sends writes
// to the leader, and moves to another node when its own stops answering.
// Data from the cluster is put in the page as text only (textContent and SVG
// attributes), never as HTML.

const TOKEN_KEY = "coordinator.token"; // sessionStorage: this tab only
const REQUEST_TIMEOUT_MS = 2500;
const CLUSTER_POLL_MS = 1000;
const PEERS_POLL_MS = 2000;
const RECENT_POLL_MS = 5000;
const RECENT_SPAN_MS = 10 * 60 * 1000; // what the nodes keep of their last minutes
const FEED_MAX = 200;
const PAGE_SIZE = 25;
const PACKET_MS = 900;
const PACKETS_MAX = 24; // in flight on the topology; more calls than this are listed, not animated
const SVG_NS = "http://www.w3.org/2000/svg";
const TERMINAL_EVENTS = new Set(["completed", "compensated", "committed", "aborted"]);

const app = {
  base: window.location.origin, // the node this page talks to
  token: sessionStorage.getItem(TOKEN_KEY) || null,
  nodes: [], // [{id, http}] from /v1/cluster
  view: null, // this node's /v1/cluster
  peerViews: new Map(), // node id -> its /v1/cluster, or null when it did not answer
  leaderUrl: null,
  services: [],
  stepServices: new Map(), // "workflow/step" -> service, learned from call_started
  lastEventId: null,
  streamAbort: null,
  recent: new Map(), // node id -> its GET /v1/cluster/recent
  route: { name: "topology" },
  list: { cursors: [null], page: 0, next: null },
  tokenPrompt: null,
};

// -- small helpers ----------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function timeOf(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function dateTimeOf(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toLocaleDateString()} ${timeOf(iso)}`;
}

function notice(text, error = false) {
  const box = $("notice");
  box.textContent = text;
  box.className = error ? "error" : "";
  box.hidden = !text;
  clearTimeout(notice.timer);
  if (text) notice.timer = setTimeout(() => { box.hidden = true; }, error ? 10000 : 5000);
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// At most once per `ms`, the last call always served: under a steady stream
// of events a debounce would never fire.
function throttle(fn, ms) {
  let last = 0, timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
  };
}

// -- the API -------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  if (app.token) out.Authorization = `Bearer ${app.token}`;
  return out;
}

async function request(base, path, { method = "GET", body, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal: abort.signal, redirect: "error", cache: "no-store" };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(base + path, init);
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  } finally {
    clearTimeout(timer);
  }
}

// A read from the node this page talks to; on a network failure, move to
// another node and read there. 401 asks for a token and reads again.
async function read(path) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request(app.base, path);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && attempt < 2 && (await askToken())) continue;
      if (error instanceof ApiError || attempt >= 1) throw error;
      if (!(await failover())) throw error;
    }
  }
}

// A write goes to the leader; when the leader moved, learn the new one and try once more.
async function write(path, body) {
  for (let attempt = 0; ; attempt++) {
    const leader = app.leaderUrl || app.base;
    try {
      return await request(leader, path, { method: "POST", body });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && attempt < 2 && (await askToken())) continue;
      const moved = !(error instanceof ApiError) || error.status === 307 || error.code === "no_leader";
      if (!moved || attempt >= 2) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500));
      await pollCluster();
    }
  }
}

async function failover() {
  const others = app.nodes.map((n) => n.http).filter((url) => url !== app.base);
  for (const url of others) {
    try {
      await request(url, "/healthz", { timeoutMs: 1000 });
      const from = app.base;
      app.base = url;
      notice(`${from} stopped answering: this page now talks to ${url}`);
      restartStream();
      return true;
    } catch (error) {
      /* the next one */
    }
  }
  return false;
}

// -- the token -----------------------------------------------------------------------
function askToken() {
  if (app.tokenPrompt) return app.tokenPrompt;
  const dialog = $("token-dialog");
  $("token-input").value = "";
  app.tokenPrompt = new Promise((resolve) => {
    const done = (ok) => {
      dialog.close();
      app.tokenPrompt = null;
      resolve(ok);
    };
    $("token-save").onclick = () => {
      const token = $("token-input").value.trim();
      if (!token) return;
      app.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      restartStream();
      done(true);
    };
    $("token-forget").onclick = () => {
      app.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      done(false);
    };
    $("token-cancel").onclick = () => done(false);
    dialog.showModal();
  });
  return app.tokenPrompt;
}

function confirmAction(title, text, fields = []) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  const box = $("confirm-fields");
  box.replaceChildren(...fields);
  return new Promise((resolve) => {
    $("confirm-ok").onclick = () => { dialog.close(); resolve(true); };
    $("confirm-cancel").onclick = () => { dialog.close(); resolve(false); };
    dialog.showModal();
  });
}

// -- the cluster -----------------------------------------------------------------------
async function pollCluster() {
  try {
    const view = await read("/v1/cluster");
    app.view = view;
    app.nodes = view.nodes.map((n) => ({ id: n.id, http: n.http }));
    app.leaderUrl = view.leader ? view.leader.http : null;
    app.peerViews.set(view.node, view);
    renderHeader();
    if (app.route.name === "topology") renderTopology();
    if (app.route.name === "cluster") renderNodes();
  } catch (error) {
    $("node-role").textContent = "unreachable";
  }
}

async function pollPeers() {
  await Promise.all(app.nodes.filter((n) => n.http !== app.base).map(async (n) => {
    try {
      app.peerViews.set(n.id, await request(n.http, "/v1/cluster", { timeoutMs: 1500 }));
    } catch (error) {
      app.peerViews.set(n.id, null);
    }
  }));
}

function renderHeader() {
  const view = app.view;
  if (!view) return;
  $("node-id").textContent = view.node;
  const role = $("node-role");
  role.textContent = view.role;
  role.className = `role ${view.role}`;
  $("leader-id").textContent = view.leader ? view.leader.id : "none";
  $("term").textContent = view.term;
}

async function loadServices() {
  try {
    const data = await read("/v1/services?stale=true");
    app.services = data.services.map((s) => s.name).sort();
    const select = $("f-service");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "any" }), ...app.services.map((name) => el("option", { value: name, text: name })));
    select.value = app.services.includes(chosen) ? chosen : "";
    if (app.route.name === "topology") renderTopology();
  } catch (error) {
    /* shown by the next poll */
  }
}

// -- the event stream ----------------------------------------------------------------
// EventSource cannot send an Authorization header, so the stream is read
// with fetch and parsed here (the text/event-stream format: "id:", "event:",
// "data:" lines, a blank line ends an event).
function restartStream() {
  if (app.streamAbort) app.streamAbort.abort();
  app.streamAbort = new AbortController();
  runStream(app.streamAbort.signal);
}

async function runStream(signal) {
  const state = $("stream-state");
  while (!signal.aborted) {
    try {
      const extra = app.lastEventId ? { "Last-Event-ID": app.lastEventId } : {};
      const response = await fetch(`${app.base}/v1/events`, { headers: headers(extra), signal, cache: "no-store" });
      if (response.status === 401) {
        state.textContent = "needs a token";
        state.className = "stream down";
        if (!(await askToken())) return;
        continue;
      }
      if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
      state.textContent = "live";
      state.className = "stream live";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handleBlock(block);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    state.textContent = "reconnecting";
    state.className = "stream down";
    await new Promise((resolve) => setTimeout(resolve, 500));
    if (!signal.aborted) {
      try {
        await request(app.base, "/healthz", { timeoutMs: 1000 });
      } catch (error) {
        if (await failover()) return; // failover started a stream on the new node
      }
    }
  }
}

function handleBlock(block) {
  let id = null, kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "event") kind = value;
    else if (field === "data") data += (data ? "\n" : "") + value;
  }
  if (!data) return;
  if (id !== null) app.lastEventId = id;
  let event;
  try { event = JSON.parse(data); } catch (error) { return; }
  onEvent(kind, event);
}

const refreshList = throttle(() => { if (app.route.name === "workflows") loadWorkflows(); }, 1000);
const refreshWorkflow = throttle(() => { if (app.route.name === "workflow") loadWorkflow(); }, 250);
const refreshServices = debounce(loadServices, 300);
const refreshCluster = debounce(pollCluster, 100);

function onEvent(kind, event) {
  if (kind === "reset" || kind === "dropped") {
    refreshList();
    refreshWorkflow();
    refreshServices();
    return;
  }
  if (kind === "role") { refreshCluster(); return; }
  if (kind === "service") { refreshServices(); return; }
  if (kind !== "workflow") return;
  feed(event);
  if (app.route.name === "workflows") refreshList();
  if (app.route.name === "workflow" && app.route.id === event.workflow) refreshWorkflow();
}

// -- the feed and the animation ------------------------------------------------------------
// Labels as the coordinator-pattern picture writes them: [STEP 2] reserve-inventory, [OK], ...
function describe(event) {
  const r = event.record || {};
  const who = `${event.workflow_type === "saga" ? "saga" : "tx"} ${event.workflow}`;
  if (event.type === "call_started") {
    const c = event.call;
    app.stepServices.set(`${event.workflow}/${c.step}`, c.service);
    const labels = { action: `[STEP ${c.number}] ${c.step}`, compensation: `[COMPENSATE] ${c.step}`, prepare: `[PREPARE] ${c.service}`, commit: `[COMMIT] ${c.service}`, abort: `[ABORT] ${c.service}` };
    const tone = c.phase === "compensation" || c.phase === "abort" ? "comp" : "call";
    const label = labels[c.phase] || `[${c.phase}] ${c.step}`;
    return { label, short: label, tone, service: c.service, out: true, who, call: true };
  }
  const service = r.service || app.stepServices.get(`${event.workflow}/${r.step}`);
  const step = r.step || r.service || "";
  const reason = r.error ? `: ${r.error}` : "";
  // a call's outcome travels back from its service (call: true); other records only go to the feed
  const back = (label, tone, detail = "") => ({ label: label + detail, short: label, tone, service, who, call: true });
  switch (event.type) {
    case "step_succeeded": return back(`[OK] ${step}`, "ok");
    case "step_failed": return back(`[DECLINED] ${step}`, "bad", reason);
    case "step_unknown": return back(`[UNKNOWN] ${step}`, "warn", reason);
    case "compensation_succeeded": return back(`[COMPENSATED] ${step}`, "comp");
    case "stuck": return back(`[STUCK] ${step}`, "bad", reason);
    case "vote": return back(`[VOTE ${String(r.vote || "").toUpperCase()}] ${r.service}`, r.vote === "yes" ? "ok" : "bad");
    case "acknowledged": return back(`[${String(r.phase || "").toUpperCase()} OK] ${r.service}`, r.phase === "abort" ? "comp" : "ok");
    case "started": return { label: "[START]", tone: "info", who };
    case "decided": return { label: `[DECIDED ${String(r.decision || "").toUpperCase()}] ${who}`, tone: r.decision === "commit" ? "ok" : "comp", who };
    case "completed": case "committed": return { label: `[DONE] ${who} ${event.type}`, tone: "ok", who };
    case "compensated": case "aborted": return { label: `[DONE] ${who} ${event.type}`, tone: "comp", who };
    case "compensating": return { label: `[COMPENSATING] ${who}`, tone: "comp", who };
    case "redrive": return { label: `[REDRIVE] ${who}${r.by ? " by " + r.by : ""}`, tone: "comp", who };
    case "signal": return { label: `[SIGNAL] ${r.signal || ""}`, tone: "info", who };
    case "pruned": return null;
    default: return { label: `[${event.type.toUpperCase()}] ${step}`, tone: "info", service, who };
  }
}

// Lines wait for the next frame and go in together, the newest FEED_MAX
// only: a busy cluster applies thousands of events a second.
const pendingFeed = [];
function feed(event) {
  const line = describe(event);
  if (!line) return;
  pendingFeed.push([event, line]);
  if (pendingFeed.length > FEED_MAX) pendingFeed.shift();
  if (pendingFeed.length === 1) requestAnimationFrame(flushFeed);
}

function flushFeed() {
  const list = $("feed");
  const items = pendingFeed.splice(0).map(([event, line]) => {
    if (line.call && line.service && app.route.name === "topology" && !document.hidden) animate(line);
    const head = line.short || line.label;
    const arrow = line.service && !head.includes(line.service) ? ` → ${line.service}` : "";
    return el("li", { class: line.tone, "data-workflow": event.workflow, "data-type": event.type },
      el("time", { text: timeOf(event.at) }), head, arrow, line.label.slice(head.length), el("span", { class: "hint", text: `  ${line.who}` }));
  });
  list.prepend(...items.reverse());
  while (list.children.length > FEED_MAX) list.lastChild.remove();
}

const layout = { coordinator: { x: 40, y: 40, w: 380, h: 440 }, services: { x: 640, y: 40, w: 320, h: 440 }, servicePos: new Map() };

function renderTopology() {
  const root = $("topology");
  const c = layout.coordinator, s = layout.services;
  const packets = [...root.querySelectorAll(".packet")];
  const nodes = app.view ? app.view.nodes : [];
  const center = { x: c.x + c.w / 2, y: c.y + c.h / 2 + 10 };
  const radius = 120;
  const positions = new Map(nodes.map((n, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(nodes.length, 1);
    return [n.id, { x: center.x + radius * Math.cos(angle), y: center.y + radius * Math.sin(angle) }];
  }));
  const parts = [
    svg("rect", { class: "group-box", x: c.x, y: c.y, width: c.w, height: c.h, rx: 12 }),
    svg("text", { class: "group-label", x: c.x + 14, y: c.y + 24, text: "coordinator group (raft)" }),
    svg("rect", { class: "group-box", x: s.x, y: s.y, width: s.w, height: s.h, rx: 12 }),
    svg("text", { class: "group-label", x: s.x + 14, y: s.y + 24, text: "services" }),
  ];
  // links between Raft nodes: down when either end says it cannot reach the other
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      const a = nodes[i], b = nodes[j];
      const up = linkUp(a.id, b.id);
      const p = positions.get(a.id), q = positions.get(b.id);
      parts.push(svg("line", { class: `raft-link${up ? "" : " down"}`, x1: p.x, y1: p.y, x2: q.x, y2: q.y }));
    }
  }
  for (const n of nodes) {
    const view = peerView(n.id);
    const leader = app.view && app.view.leader && app.view.leader.id === n.id;
    const down = view === null;
    const p = positions.get(n.id);
    const sub = view ? `${view.role} · term ${view.term}` : down ? "not answering" : "";
    const index = view ? `commit ${view.commit_index} · applied ${view.applied_index}` : "";
    parts.push(svg("g", { class: `raft-node${leader ? " leader" : ""}${down ? " down" : ""}`, "data-node": n.id, "data-leader": leader ? "true" : "false" },
      svg("circle", { cx: p.x, cy: p.y, r: 38 }),
      svg("text", { x: p.x, y: p.y + 5, text: leader ? `★ ${n.id}` : n.id }),
      svg("text", { class: "sub", x: p.x, y: p.y + 56, text: sub }),
      svg("text", { class: "sub", x: p.x, y: p.y + 70, text: index })));
  }
  // one edge from the coordinator group to each service; none between services
  const breakers = (app.view && app.view.executor && app.view.executor.breakers) || leaderBreakers();
  const shown = app.services.slice(0, 10);
  const gap = Math.min(80, (s.h - 60) / Math.max(shown.length, 1));
  layout.servicePos.clear();
  shown.forEach((name, i) => {
    const y = s.y + 50 + i * gap;
    const box = { x: s.x + 40, y, w: s.w - 80, h: Math.min(48, gap - 10) };
    layout.servicePos.set(name, { x: box.x, y: box.y + box.h / 2 });
    parts.push(svg("line", { class: "edge", x1: c.x + c.w, y1: c.y + c.h / 2, x2: box.x, y2: box.y + box.h / 2 }));
    const open = breakers && breakers[name] && breakers[name].open;
    parts.push(svg("g", { class: `service${open ? " breaker" : ""}`, "data-service": name },
      svg("rect", { x: box.x, y: box.y, width: box.w, height: box.h, rx: 6 }),
      svg("text", { x: box.x + 12, y: box.y + box.h / 2 + 5, text: name }),
      open ? svg("text", { class: "sub", x: box.x + box.w - 90, y: box.y + box.h / 2 + 5, text: "breaker open" }) : null));
  });
  if (app.services.length > shown.length) {
    parts.push(svg("text", { class: "group-label", x: s.x + 14, y: s.y + s.h - 12, text: `+ ${app.services.length - shown.length} more` }));
  }
  root.replaceChildren(...parts, ...packets);
}

// A node is down when it did not answer its last poll, or when the node this
// page talks to says it cannot reach it (fresher than that poll).
function peerView(id) {
  const mine = app.view;
  if (mine && id !== mine.node && (mine.nodes.find((n) => n.id === id) || {}).reachable === false) return null;
  return id === (mine && mine.node) ? mine : app.peerViews.get(id);
}

function leaderBreakers() {
  const leader = app.view && app.view.leader && app.peerViews.get(app.view.leader.id);
  return leader && leader.executor ? leader.executor.breakers : null;
}

function linkUp(a, b) {
  const va = peerView(a), vb = peerView(b);
  if (va === null || vb === null) return false;
  const reach = (view, other) => !view || (view.nodes.find((n) => n.id === other) || {}).reachable !== false;
  return reach(va, b) && reach(vb, a);
}

function animate(line) {
  const target = layout.servicePos.get(line.service);
  if (!target || $("topology").querySelectorAll(".packet").length >= PACKETS_MAX) return;
  const c = layout.coordinator;
  const from = { x: c.x + c.w, y: c.y + c.h / 2 };
  const [start, end] = line.out ? [from, target] : [target, from];
  const group = svg("g", { class: `packet ${line.tone}`, "data-label": line.short },
    svg("circle", { r: 7, cx: start.x, cy: start.y }),
    svg("text", { x: start.x, y: start.y - 12, text: line.short }));
  $("topology").append(group);
  const began = performance.now();
  const circle = group.firstChild, text = group.lastChild;
  const frame = (now) => {
    const t = Math.min(1, (now - began) / PACKET_MS);
    const x = start.x + (end.x - start.x) * t, y = start.y + (end.y - start.y) * t;
    circle.setAttribute("cx", x); circle.setAttribute("cy", y);
    text.setAttribute("x", x - 40); text.setAttribute("y", y - 12);
    if (t < 1) requestAnimationFrame(frame);
    else setTimeout(() => group.remove(), 400);
  };
  requestAnimationFrame(frame);
}

// -- workflows ------------------------------------------------------------------------------
function filters() {
  const iso = (value) => (value ? new Date(value).toISOString() : "");
  return {
    kind: $("f-kind").value,
    service: $("f-service").value,
    q: $("f-q").value.trim(),
    created_after: iso($("f-after").value),
    created_before: iso($("f-before").value),
    order: $("f-order").value,
    state: app.list.state || "",
  };
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null && value !== undefined) search.set(key, value);
  return search.toString();
}

async function loadWorkflows() {
  const f = filters();
  const plural = f.kind === "saga" ? "sagas" : "transactions";
  const cursor = app.list.cursors[app.list.page];
  const q = query({ state: f.state, service: f.service, q: f.q, created_after: f.created_after, created_before: f.created_before, order: f.order, after: cursor, limit: PAGE_SIZE, view: "summary", stale: "true" });
  try {
    const data = await read(`/v1/${plural}?${q}`);
    renderWorkflows(f, data[plural], data);
  } catch (error) {
    notice(`workflows: ${error.message}`, true);
  }
}

function renderWorkflows(f, items, data) {
  const counts = data.counts || {};
  const attention = new Set(["stuck", "failed", "timed_out"]);
  const busy = new Set(["compensating", "aborting"]);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const chip = (state, n) => el("span", {
    class: `chip${(app.list.state || "") === state ? " selected" : ""}${n && attention.has(state) ? " attention" : ""}${n && busy.has(state) ? " busy" : ""}`,
    "data-state": state, text: `${state || "all"} ${n}`,
    onclick: () => { app.list.state = state; resetPaging(); loadWorkflows(); },
  });
  $("counts").replaceChildren(chip("", total), ...Object.entries(counts).map(([state, n]) => chip(state, n)));
  const body = $("workflows").querySelector("tbody");
  body.replaceChildren(...items.map((w) => {
    const detail = w.failure ? `${w.failure.reason}${w.failure.step ? " at " + w.failure.step : ""}: ${w.failure.error}` : w.decision ? `decision: ${w.decision}` : "";
    return el("tr", { "data-id": w.id },
      el("td", { class: "mono" }, el("a", { href: `#/${f.kind}/${encodeURIComponent(w.id)}`, text: w.id })),
      el("td", {}, el("span", { class: `state ${w.state}`, text: w.state })),
      el("td", { text: (w.services || []).join(", ") }),
      el("td", { class: "nowrap", text: dateTimeOf(w.created_at) }),
      el("td", { class: "nowrap", text: dateTimeOf(w.updated_at) }),
      el("td", { text: detail }));
  }));
  app.list.next = data.next || null;
  const first = app.list.page * PAGE_SIZE;
  $("page-info").textContent = items.length ? `${first + 1}-${first + items.length} of ${data.total ?? "?"}` : "none";
  $("page-prev").disabled = app.list.page === 0;
  $("page-first").disabled = app.list.page === 0;
  $("page-next").disabled = !app.list.next;
  $("bulk").hidden = f.kind !== "saga";
}

function resetPaging() {
  app.list.cursors = [null];
  app.list.page = 0;
}

async function bulkRedrive() {
  const f = filters();
  const filter = { state: "stuck" };
  for (const key of ["service", "q", "created_after", "created_before"]) if (f[key]) filter[key] = f[key];
  const result = $("bulk-result");
  try {
    const preview = await write("/v1/sagas/redrive", { ...filter, dry_run: true });
    if (!preview.matched) { result.textContent = "no stuck saga matches these filters"; return; }
    const ok = await confirmAction("Redrive stuck sagas",
      `${preview.matched} stuck saga(s) match. Redrive ${preview.ids.length} now (each one a log entry)?` + (preview.remaining ? ` ${preview.remaining} more stay for another call.` : ""),
      [el("p", { class: "mono", text: preview.ids.slice(0, 10).join("\n") + (preview.ids.length > 10 ? "\n…" : "") })]);
    if (!ok) return;
    const answer = await write("/v1/sagas/redrive", { ...filter, limit: preview.ids.length });
    result.textContent = `redriven ${answer.redriven} of ${answer.matched}; ${answer.remaining} left`;
    loadWorkflows();
  } catch (error) {
    result.textContent = actionError(error);
  }
}

function actionError(error) {
  if (error instanceof ApiError && error.status === 403) return `refused: ${error.message}`;
  if (error instanceof ApiError && error.status === 401) return "refused: this needs a token (operate)";
  return `failed: ${error.message}`;
}

// -- one workflow -----------------------------------------------------------------------------
async function loadWorkflow() {
  const { kind, id } = app.route;
  const plural = kind === "saga" ? "sagas" : "transactions";
  try {
    const data = await read(`/v1/${plural}/${encodeURIComponent(id)}?stale=true&definition=true`);
    renderWorkflow(kind, data);
  } catch (error) {
    $("wf-title").textContent = `${kind} ${id}`;
    $("wf-summary").replaceChildren(el("span", { text: error.message }));
  }
}

function renderWorkflow(kind, w) {
  $("wf-title").replaceChildren(`${kind === "saga" ? "Saga" : "Transaction"} `, el("span", { class: "mono", text: w.id }), " ", el("span", { class: `state ${w.state}`, id: "wf-state", text: w.state }));
  const summary = [
    ["created", dateTimeOf(w.created_at)], ["updated", dateTimeOf(w.updated_at)],
    kind === "saga" ? ["redrives", w.redrives] : ["decision", w.decision || "none yet"],
  ];
  if (w.failure) summary.push(["failure", `${w.failure.reason}${w.failure.step ? " at " + w.failure.step : ""}: ${w.failure.error}`]);
  $("wf-summary").replaceChildren(...summary.map(([k, v]) => el("span", {}, `${k} `, el("b", { text: String(v) }))));
  const parts = $("wf-parts");
  if (kind === "saga") {
    $("wf-parts-title").textContent = "Steps";
    parts.querySelector("thead").replaceChildren(el("tr", {}, ...["#", "step", "state", "attempts", "error", "compensation attempts", "compensation error"].map((t) => el("th", { text: t }))));
    parts.querySelector("tbody").replaceChildren(...w.steps.map((s, i) => el("tr", {},
      el("td", { text: i + 1 }), el("td", { text: s.name }), el("td", {}, el("span", { class: `state ${s.state}`, text: s.state })),
      el("td", { text: s.attempts }), el("td", { text: s.error || "" }), el("td", { text: s.compensation_attempts || "" }), el("td", { text: s.compensation_error || "" }))));
  } else {
    $("wf-parts-title").textContent = "Participants";
    parts.querySelector("thead").replaceChildren(el("tr", {}, ...["#", "service", "vote", "state"].map((t) => el("th", { text: t }))));
    parts.querySelector("tbody").replaceChildren(...w.participants.map((p, i) => el("tr", {},
      el("td", { text: i + 1 }), el("td", { text: p.service }), el("td", { text: p.vote || "" }), el("td", {}, el("span", { class: `state ${p.state}`, text: p.state })))));
  }
  $("timeline").querySelector("tbody").replaceChildren(...w.history.map((r) => timelineRow(kind, w.id, r)));
  const definition = $("wf-definition-box");
  definition.hidden = !w.definition;
  $("wf-definition").textContent = w.definition ? JSON.stringify(w.definition, null, 2) : "";
  const terminal = TERMINAL_EVENTS.has(w.state);
  $("wf-signal").hidden = kind !== "saga" || terminal;
  $("wf-redrive").hidden = kind !== "saga" || w.state !== "stuck";
}

function timelineRow(kind, id, r) {
  const compensation = /compensat|stuck|abort/.test(r.event) || r.phase === "abort";
  const failure = /failed|unknown|timed_out/.test(r.event) || r.vote === "no";
  const success = /succeeded|completed|committed/.test(r.event) || r.vote === "yes";
  let key = "";
  if (kind === "saga" && r.step && /^step_|^compensation|^stuck/.test(r.event)) key = `${id}/${r.step}/${/^step_/.test(r.event) ? "action" : "compensation"}`;
  if (kind === "tx" && r.service) key = `${id}/${r.service}/${r.event === "vote" ? "prepare" : r.phase || ""}`;
  const outcome = r.error || r.vote || r.decision && `${r.decision} (${r.reason})` || r.signal || "";
  return el("tr", { class: compensation ? "compensation" : failure ? "failure" : success ? "success" : "", "data-event": r.event, "data-step": r.step || r.service || "" },
    el("td", { class: "mono", title: r.at, text: timeOf(r.at) }),
    el("td", { text: r.event }),
    el("td", { class: "nowrap", text: r.step || r.service || "" }),
    el("td", { text: r.attempts ?? "" }),
    el("td", { class: "mono", text: key }),
    el("td", { class: "mono", text: r.fence || "" }),
    el("td", { class: "nowrap", text: r.duration_ms !== undefined ? `${r.duration_ms} ms` : "" }),
    el("td", { text: outcome }),
    el("td", { text: r.by || "" }));
}

async function sendSignal() {
  const name = el("input", { id: "signal-name", maxlength: 64, placeholder: "approve" });
  const payload = el("textarea", { id: "signal-payload", placeholder: "{\"approved\": true}" });
  const ok = await confirmAction("Send a signal", `to saga ${app.route.id}`, [el("label", {}, "signal name", name), el("label", {}, "payload (JSON, optional)", payload)]);
  if (!ok) return;
  const result = $("wf-action-result");
  let body = null;
  try { body = payload.value.trim() ? JSON.parse(payload.value) : null; } catch (error) { result.textContent = "the payload is not JSON"; return; }
  try {
    const answer = await write(`/v1/sagas/${encodeURIComponent(app.route.id)}/signals/${encodeURIComponent(name.value.trim())}`, body);
    result.textContent = `signal ${answer.signal}: ${answer.changed ? "taken" : "not taken"} (${answer.state})`;
    loadWorkflow();
  } catch (error) {
    result.textContent = actionError(error);
  }
}

async function redriveOne() {
  const ok = await confirmAction("Redrive", `Resume compensating saga ${app.route.id}? Its stuck compensation is called again with the same idempotency key.`);
  if (!ok) return;
  const result = $("wf-action-result");
  try {
    const answer = await write(`/v1/sagas/${encodeURIComponent(app.route.id)}/redrive`, undefined);
    result.textContent = `redriven: now ${answer.state}`;
    loadWorkflow();
  } catch (error) {
    result.textContent = actionError(error);
  }
}

// -- the cluster page ---------------------------------------------------------------------------
function renderNodes() {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren(...app.nodes.map((n) => {
    const v = peerView(n.id);
    if (!v) return el("tr", { "data-node": n.id }, el("td", { text: n.id }), el("td", { class: "mono", text: n.http }), el("td", { colspan: 8, text: "not answering" }));
    const links = v.nodes.filter((m) => m.id !== v.node && m.reachable).length;
    const breakers = Object.entries((v.executor && v.executor.breakers) || {}).filter(([, b]) => b.open).map(([name]) => name);
    return el("tr", { "data-node": n.id },
      el("td", { text: n.id }), el("td", { class: "mono", text: n.http }),
      el("td", {}, el("span", { class: `role ${v.role}`, text: v.role })), el("td", { text: v.term }),
      el("td", { text: v.commit_index }), el("td", { text: v.applied_index }), el("td", { text: v.has_quorum ? "yes" : "no" }),
      el("td", { text: `${links} of ${v.nodes.length - 1}` }),
      el("td", { text: v.executor ? v.executor.calls_in_flight : "" }), el("td", { text: breakers.join(", ") || "none" }));
  }));
  drawCharts();
}

// The last minutes as each node measured them (GET /v1/cluster/recent): the
// charts are full from the first look, not only since the page opened.
async function pollRecent() {
  await Promise.all(app.nodes.map(async (n) => {
    if (app.peerViews.get(n.id) === null) return;
    try { app.recent.set(n.id, await request(n.http, "/v1/cluster/recent", { timeoutMs: 2000 })); } catch (error) { /* next time */ }
  }));
  if (app.route.name === "cluster") drawCharts();
}

function drawChart(id, series) {
  const root = $(id);
  const width = 600, height = 140, left = 40, bottom = 20;
  const points = series.flatMap((s) => s.points).filter(([, v]) => v !== null);
  const max = Math.max(1, ...points.map(([, v]) => v));
  const now = Date.now(), span = RECENT_SPAN_MS;
  const x = (t) => left + ((t - (now - span)) / span) * (width - left);
  const y = (v) => height - bottom - (v / max) * (height - bottom - 10);
  const colors = ["#58a6ff", "#3fb950", "#e3b341", "#f0883e", "#bc8cff"];
  root.replaceChildren(
    svg("line", { class: "chart-axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
    svg("text", { class: "chart-label", x: 2, y: 16, text: max.toFixed(max < 10 ? 1 : 0) }),
    svg("text", { class: "chart-label", x: 2, y: height - bottom, text: "0" }),
    svg("text", { class: "chart-label", x: width - 60, y: height - 4, text: "now" }),
    ...series.map((s, i) => svg("polyline", { class: "chart-line", stroke: colors[i % colors.length], points: s.points.filter(([, v]) => v !== null).map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") })),
    ...series.map((s, i) => svg("text", { class: "chart-label", x: left + 10 + i * 70, y: height - 4, fill: colors[i % colors.length], text: s.name })));
}

function drawCharts() {
  const series = (id, field) => ((app.recent.get(id) || {}).windows || []).map((w) => [Date.parse(w.at), w[field]]);
  const leader = app.view && app.view.leader ? app.view.leader.id : null;
  const mine = app.view ? app.view.node : null;
  drawChart("chart-rate", [{ name: mine || "", points: series(mine, "workflows_finished_per_s") }]);
  drawChart("chart-p99", [{ name: leader || "no leader", points: series(leader, "commit_p99_ms") }]);
  drawChart("chart-applied", app.nodes.map((n) => ({ name: n.id, points: series(n.id, "commands_per_s") })));
}

// -- routing ----------------------------------------------------------------------------------
function route() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/");
  if ((parts[0] === "saga" || parts[0] === "tx") && parts[1]) app.route = { name: "workflow", kind: parts[0], id: decodeURIComponent(parts.slice(1).join("/")) };
  else if (["topology", "workflows", "cluster"].includes(parts[0])) app.route = { name: parts[0] };
  else app.route = { name: "topology" };
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${app.route.name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === app.route.name || (app.route.name === "workflow" && link.dataset.view === "workflows"));
  $("wf-action-result").textContent = "";
  if (app.route.name === "topology") renderTopology();
  if (app.route.name === "workflows") loadWorkflows();
  if (app.route.name === "workflow") loadWorkflow();
  if (app.route.name === "cluster") renderNodes();
}

function start() {
  window.addEventListener("hashchange", route);
  for (const id of ["f-kind", "f-service", "f-after", "f-before", "f-order"]) $(id).addEventListener("change", () => { if (id === "f-kind") app.list.state = ""; resetPaging(); loadWorkflows(); });
  $("f-q").addEventListener("input", debounce(() => { resetPaging(); loadWorkflows(); }, 300));
  $("page-next").addEventListener("click", () => { if (!app.list.next) return; app.list.cursors[app.list.page + 1] = app.list.next; app.list.page += 1; loadWorkflows(); });
  $("page-prev").addEventListener("click", () => { if (app.list.page > 0) { app.list.page -= 1; loadWorkflows(); } });
  $("page-first").addEventListener("click", () => { resetPaging(); loadWorkflows(); });
  $("bulk-redrive").addEventListener("click", bulkRedrive);
  $("wf-signal").addEventListener("click", sendSignal);
  $("wf-redrive").addEventListener("click", redriveOne);
  $("token-button").addEventListener("click", () => askToken().then((ok) => { if (ok) { pollCluster(); route(); } }));
  route();
  pollCluster().then(() => { pollRecent(); pollPeers().then(() => { if (app.route.name === "topology") renderTopology(); }); loadServices(); restartStream(); });
  setInterval(pollCluster, CLUSTER_POLL_MS);
  setInterval(() => pollPeers().then(() => { if (app.route.name === "topology") renderTopology(); if (app.route.name === "cluster") renderNodes(); }), PEERS_POLL_MS);
  setInterval(pollRecent, RECENT_POLL_MS);
}

start();
