// The Switchboard console: plain DOM, no framework, no build step. It uses
// only the gateway's public endpoints, as the signed-in principal (a
// session cookie) or as anonymous. Data is put in the page as text, never
// as markup.
"use strict";

const $ = (selector) => document.querySelector(selector);
const REFRESH_MS = 1000;
const STREAM_LINES = 200;
let previous = { at: 0, services: new Map(), topics: new Map() };

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function problem(text) {
  const box = $("#problem");
  box.hidden = !text;
  box.textContent = text || "";
}

// A call through the gateway: the reply, or an Error carrying the gateway's
// {"error", "message"}.
async function call(target, args, timeout) {
  const dot = target.lastIndexOf(".");
  if (dot < 1) throw new Error("a target is service.method");
  const query = timeout ? "?timeout=" + encodeURIComponent(timeout) : "";
  const path = "/v1/call/" + encodeURIComponent(target.slice(0, dot)) + "/" + encodeURIComponent(target.slice(dot + 1));
  const response = await fetch(path + query, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: args === undefined ? "" : JSON.stringify(args),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body && body.message ? body.message : response.statusText);
    error.kind = body && body.error;
    throw error;
  }
  return body;
}

function fill(table, rows, columns) {
  const body = $(table + " tbody");
  body.replaceChildren();
  if (rows.length === 0) body.append(el("tr", {}, el("td", { class: "empty", colspan: columns }, "none")));
  for (const row of rows) body.append(row);
}

function rate(now, before, key, count) {
  const old = before.get(key);
  before.set(key, count);
  if (old === undefined || !previous.at) return "";
  return (((count - old) * 1000) / Math.max(1, now - previous.at)).toFixed(1);
}

const ACTIONS = ["start", "stop", "restart", "pause", "continue"];

async function control(service, action) {
  try {
    await call("$sys.services." + action, { service }, "30s");
    problem("");
  } catch (error) {
    problem(action + " " + service + ": " + error.message);
  }
  refresh();
}

function supervisedRows(statuses) {
  return statuses.map((s) =>
    el("tr", { "data-service": s.service },
      el("td", {}, s.service),
      el("td", { class: "state state-" + s.state.toLowerCase() }, s.state),
      el("td", {}, s.start_type),
      el("td", {}, s.instances.length),
      el("td", {}, ...ACTIONS.map((action) =>
        el("button", { "data-action": action, onclick: () => control(s.service, action) }, action)))));
}

function serviceRows(services, now, seen) {
  const rows = [];
  for (const service of services) {
    for (const instance of service.instances) {
      const key = service.service + "#" + instance.instance;
      rows.push(el("tr", { "data-service": service.service },
        el("td", {}, service.service), el("td", {}, instance.instance),
        el("td", {}, instance.methods.join(", ")), el("td", {}, instance.client),
        el("td", {}, instance.pid ?? ""), el("td", {}, instance.delivered ?? ""),
        el("td", {}, rate(now, seen, key, instance.delivered ?? 0))));
    }
  }
  return rows;
}

async function refresh() {
  const now = Date.now();
  const asked = await Promise.allSettled([
    call("$sys.services.status", { service: "" }),
    call("$sys.registry.list"),
    call("$sys.topics.list"),
    call("$sys.queues.list"),
  ]);
  const [supervised, services, topics, queues] = asked.map((a) => (a.status === "fulfilled" ? a.value : null));
  const refused = asked.find((a) => a.status === "rejected");
  problem(refused ? refused.reason.message : "");
  if (supervised) {
    fill("#supervised", supervisedRows(supervised), 5);
    const choice = $("#logservice");
    const known = new Set([...choice.options].map((o) => o.value));
    for (const s of supervised) if (!known.has(s.service)) choice.append(el("option", { value: s.service }, s.service));
  }
  const seen = new Map(previous.services);
  if (services) fill("#services", serviceRows(services, now, seen), 7);
  const seenTopics = new Map(previous.topics);
  if (topics) {
    fill("#topics", topics.subscriptions.map((t) =>
      el("tr", {}, el("td", {}, t.pattern), el("td", {}, t.client), el("td", {}, t.delivered),
        el("td", {}, rate(now, seenTopics, t.pattern + "#" + t.client + "#" + t.pid, t.delivered)),
        el("td", {}, t.missed ?? ""))), 5);
  }
  if (queues) {
    fill("#queues", queues.map((q) =>
      el("tr", {}, el("td", {}, q.queue), el("td", {}, q.depth), el("td", {}, q.in_flight), el("td", {}, q.consumers),
        el("td", {}, (q.put_rate ?? 0).toFixed(1)), el("td", {}, (q.ack_rate ?? 0).toFixed(1)),
        el("td", {}, q.dead_lettered_total))), 7);
  }
  previous = { at: now, services: seen, topics: seenTopics };
}

// A live list fed by the gateway's Server-Sent Events.
function follow(list, pattern, show) {
  const source = new EventSource("/v1/subscribe?pattern=" + encodeURIComponent(pattern));
  const add = (text) => {
    list.append(el("li", {}, text));
    while (list.children.length > STREAM_LINES) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
  };
  source.addEventListener("message", (event) => add(show(JSON.parse(event.data))));
  source.addEventListener("lagged", (event) => add("… missed " + JSON.parse(event.data).missed + " messages"));
  return source;
}

let live = null;
let log = null;

function followLive() {
  if (live) live.close();
  $("#live").replaceChildren();
  live = follow($("#live"), $("#pattern").value || ">", (m) =>
    new Date().toLocaleTimeString() + "  " + m.topic + "  " + JSON.stringify(m.payload) + (m.retained ? "  (retained)" : ""));
}

function followLog() {
  if (log) log.close();
  $("#log").replaceChildren();
  const service = $("#logservice").value;
  if (!service) return;
  log = follow($("#log"), "sys.logs." + service, (m) =>
    typeof m.payload === "object" && m.payload ? (m.payload.message ?? JSON.stringify(m.payload)) : String(m.payload));
}

async function whoami() {
  try {
    const me = await call("$sys.daemon.whoami");
    $("#principal").textContent = "as " + me.principal;
  } catch (error) {
    $("#principal").textContent = "not connected: " + error.message;
  }
}

async function signIn(event) {
  event.preventDefault();
  const token = $("#token").value.trim();
  const response = await fetch("/v1/session", { method: "POST", headers: { Authorization: "Bearer " + token } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return problem("sign in: " + (body.message || response.statusText));
  $("#token").value = "";
  problem("");
  restart();
}

async function signOut() {
  await fetch("/v1/session", { method: "DELETE" });
  restart();
}

function restart() {
  whoami();
  followLive();
  followLog();
  refresh();
}

$("#signin").addEventListener("submit", signIn);
$("#signout").addEventListener("click", signOut);
$("#pattern").addEventListener("change", followLive);
$("#logservice").addEventListener("change", followLog);
$("#callform").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("#args").value.trim();
  try {
    const reply = await call($("#target").value.trim(), text ? JSON.parse(text) : undefined, $("#timeout").value.trim());
    $("#answer").textContent = JSON.stringify(reply, null, 2);
  } catch (error) {
    $("#answer").textContent = (error.kind ? error.kind + ": " : "") + error.message;
  }
});
window.addEventListener("error", (event) => problem("the console failed: " + event.message));
window.addEventListener("unhandledrejection", (event) => problem("the console failed: " + event.reason));
restart();
setInterval(refresh, REFRESH_MS);
