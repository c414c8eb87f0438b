// The dashboard: polls dashboard.json and draws it. Plain DOM, no framework, no build step.
// Everything from the JSON is set with textContent: route names, upstream URLs and shadow
// examples (which come from upstream answers) are never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "strangler.admin-token";
let previous = null; // the last document, to turn counters into rates

function $(id) { return document.getElementById(id); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function num(value, className) {
  return el("td", value, "num" + (className ? " " + className : ""));
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function rate(now, before, seconds) {
  if (before === undefined || seconds <= 0) return "–";
  return ((now - before) / seconds).toFixed(1);
}

// The error share over the last poll interval, or over all time before the second poll.
function share(part, whole, partBefore, wholeBefore) {
  const p = partBefore === undefined ? part : part - partBefore;
  const w = wholeBefore === undefined ? whole : whole - wholeBefore;
  return w > 0 ? (100 * p / w).toFixed(1) + "%" : "–";
}

// The route's targets as shares of its weights ("legacy 90% / search 10%"), or the one
// upstream; then who actually answered since start, when more than one did.
function split(weights, served) {
  const cell = el("td", null, "split");
  const parts = Object.entries(weights);
  const total = parts.reduce((sum, [, w]) => sum + w, 0);
  const pct = (w) => {
    const share = 100 * w / total;
    return (Number.isInteger(share) ? share : share.toFixed(1)) + "%";
  };
  cell.appendChild(el("span", parts.length > 1
    ? parts.map(([name, w]) => `${name} ${pct(w)}`).join(" / ") : parts[0][0], "targets"));
  const answered = Object.entries(served);
  if (answered.length > 1) {
    cell.appendChild(el("span", "served: " + answered.map(([n, c]) => `${n} ${c}`).join(", "), "hint"));
  }
  return cell;
}

function state(name) {
  const cell = el("td");
  if (name) cell.appendChild(el("span", name, "state"));
  return cell;
}

function trafficCells(now, before, seconds) {
  return [
    num(rate(now.requests, before && before.requests, seconds), "rate"),
    num(share(now.errors, now.requests, before && before.errors, before && before.requests),
        now.errors > 0 ? "bad errors" : "errors"),
    num(share(now.client_errors, now.requests, before && before.client_errors, before && before.requests),
        "client-errors"),
    num(now.requests, "requests"),
  ];
}

function drawRoutes(doc, seconds) {
  const before = {};
  if (previous) for (const r of previous.routes) before[r.name] = r.traffic;
  fill($("routes").tBodies[0], doc.routes.map((r) => {
    const tr = row([
      el("td", r.name, "mono"),
      el("td", r.path, "mono"),
      el("td", r.methods ? r.methods.join(", ") : "any"),
      state(r.state || (r.shadow ? "shadow" : "")),
      split(r.weights, r.traffic.by_upstream),
      el("td", r.shadow ? `${r.shadow.upstream} (${Math.round(r.shadow.sample * 100)}%)` : ""),
      ...trafficCells(r.traffic, before[r.name], seconds),
    ]);
    tr.dataset.route = r.name;
    return tr;
  }));
  const other = doc.unrouted.requests;
  $("unrouted").textContent = other
    ? `${other} requests matched no route (default upstream, admin API, rejected paths).` : "";
}

// Requests shed at a limit, by priority ("shed normal 1, background 2"), or "".
function shedText(shed) {
  const parts = Object.entries(shed).filter(([, n]) => n > 0);
  return parts.length ? "shed " + parts.map(([p, n]) => `${p} ${n}`).join(", ") : "";
}

function inFlight(load) {
  const cell = num(null, "in-flight");
  if (!load) return cell;
  cell.appendChild(el("span", `${load.in_flight} / ${load.max_in_flight}`, "count"));
  const shed = shedText(load.shed);
  if (shed) cell.appendChild(el("span", " " + shed, "hint"));
  return cell;
}

function breaker(b) {
  const cell = el("td", null, "breaker");
  if (!b) {
    cell.appendChild(el("span", "off", "state"));
    return cell;
  }
  cell.appendChild(el("span", b.state, "state" + (b.state === "closed" ? "" : " bad")));
  const wait = b.retry_after === null ? "" : `, retry in ${Math.ceil(b.retry_after)} s`;
  cell.appendChild(el("span",
    ` ${(100 * b.failure_rate).toFixed(0)}% of ${b.calls_in_window} failed, opened ${b.opened}, ` +
    `rejected ${b.rejected}${wait}`, "hint"));
  return cell;
}

function drawUpstreams(doc, seconds) {
  const before = previous ? previous.upstreams : {};
  const resilience = doc.resilience || { gateway: null, upstreams: {} };
  fill($("upstreams").tBodies[0], Object.entries(doc.upstreams).map(([name, u]) => {
    const load = resilience.upstreams[name];
    const tr = row([el("td", name, "mono"), el("td", u.url || "", "mono"),
      ...trafficCells(u, before[name], seconds), inFlight(load), load ? breaker(load.breaker) : el("td")]);
    tr.dataset.upstream = name;
    return tr;
  }));
  const gateway = resilience.gateway;
  const shed = gateway ? shedText(gateway.shed) : "";
  $("gateway-load").textContent = gateway
    ? `The whole gateway: ${gateway.in_flight} / ${gateway.max_in_flight} in flight` +
      (shed ? `; ${shed}` : "") : "";
}

// Copies dropped, in all and by reason ("3 dropped: gateway_busy 2, shadow_behind 1"); the
// report lists only the reasons with a count, the most frequent first.
function dropsText(s) {
  const reasons = Object.entries(s.drops);
  return `${s.dropped} dropped` +
    (reasons.length ? ": " + reasons.map(([r, n]) => `${r} ${n}`).join(", ") : "");
}

function drawShadow(doc) {
  const box = $("shadow");
  $("shadow-empty").hidden = doc.shadow.length > 0;
  box.replaceChildren(...doc.shadow.map((s) => {
    const part = el("div");
    part.dataset.route = s.route;
    part.appendChild(el("h3", `${s.route}: ${s.identical_pct.toFixed(1)}% identical`));
    part.appendChild(el("p",
      `${s.compared} compared of ${s.mirrored} mirrored; ${s.different} differing, ` +
      `${s.noise_only} noise only, ${s.status_only} status only, ` +
      `${s.candidate_errors} candidate errors, ${dropsText(s)}`, "hint"));
    if (s.top_differences.length) {
      const table = el("table");
      table.appendChild(row(["field", "kind", "comparisons", "example"].map((h) => el("th", h))));
      for (const f of s.top_differences) {
        const e = f.example;
        table.appendChild(row([el("td", f.path, "mono"), el("td", f.kind), num(f.count),
          el("td", `${e.primary ?? "(absent)"} → ${e.candidate ?? "(absent)"}`, "mono")]));
      }
      part.appendChild(table);
    }
    return part;
  }));
}

function drawCdc(doc) {
  const cdc = doc.cdc;
  const status = $("cdc-status");
  if (cdc.detail) {
    status.textContent = cdc.detail;
    status.className = cdc.configured ? "bad" : "hint";
  } else {
    status.textContent = `bridge ${cdc.state}, status written ${cdc.age_seconds.toFixed(1)} s ago ` +
      `(${cdc.source}); ${cdc.dead_lettered} sent to the dead-letter topic`;
    status.className = cdc.up && !cdc.dead_lettered ? "good" : "bad";
  }
  const tables = cdc.detail ? [] : cdc.tables;
  fill($("cdc").tBodies[0], tables.map((t) => {
    const tr = row([el("td", t.table, "mono"), num(t.lag_seconds, t.lag_seconds > 5 ? "bad" : ""),
      num(t.lag_events), num(t.applied), num(t.skipped),
      num(t.dead_lettered, t.dead_lettered ? "bad" : ""), el("td", t.position || "", "mono")]);
    tr.dataset.table = t.table;
    return tr;
  }));
}

function time(at) { return new Date(at * 1000).toLocaleString(); }

function drawRoutesFile(doc) {
  const file = doc.routes_file;
  $("version").textContent = `routes.yaml ${file.version}`;
  $("routes-file").textContent =
    `version ${file.version} from ${file.source}, loaded ${time(file.loaded_at)}`;
  fill($("history"), file.history.slice().reverse().map((h) =>
    el("li", `${time(h.at)}  ${h.version}`, "mono")));
  const rejected = $("rejected");
  rejected.hidden = !file.last_rejected;
  if (file.last_rejected) {
    rejected.querySelector("h3").textContent =
      `Last rejected edit, ${time(file.last_rejected.at)} (the version above keeps serving)`;
    fill(rejected.querySelector("ul"), file.last_rejected.errors.map((e) => el("li", e, "mono")));
  }
}

function draw(doc) {
  const seconds = previous ? doc.now - previous.now : 0;
  drawRoutesFile(doc);
  drawRoutes(doc, seconds);
  drawUpstreams(doc, seconds);
  drawShadow(doc);
  drawCdc(doc);
  previous = doc;
}

function setStatus(text, className) {
  const status = $("status");
  status.textContent = text;
  status.className = className;
}

function askForToken(reason) {
  $("login-reason").textContent = reason;
  $("login").hidden = false;
  $("token").focus();
}

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch("dashboard.json", { headers, cache: "no-store", credentials: "omit" });
    const body = await response.json();
    if (response.status === 401 || response.status === 403) {
      setStatus(`${response.status} ${body.error}`, "bad");
      askForToken(token ? `The token was refused: ${body.detail}` : "This dashboard needs an admin token.");
      return; // no polling until a token is given
    }
    if (!response.ok) throw new Error(`${response.status} ${body.error}: ${body.detail}`);
    $("login").hidden = true;
    $("forget").hidden = !token;
    draw(body);
    setStatus(`updated ${new Date().toLocaleTimeString()}`, "good");
  } catch (error) {
    setStatus(`poll failed: ${error.message}`, "bad");
  }
  setTimeout(poll, POLL_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  poll();
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

poll();
