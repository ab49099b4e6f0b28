// The dashboard's script (crates/http/src/dashboard/mod.rs serves it). Plain JavaScript with
// no build step: once a second it reads /metrics.json and the admin API's lists, draws the
// rates and fills the tables; /dashboard/events streams the delivery log's records. The
// buttons call the admin API with KumoMTA's request bodies, and nothing else.
'use strict';

const POLL_MS = 1000;
/** The chart spans the last two minutes, or since the page opened (at least 30 s). */
const HISTORY_S = 120;
const MIN_SPAN_S = 30;
const MAX_EVENT_ROWS = 200;
/** How long a suspension made here lasts; the operator resumes it sooner with a click. */
const SUSPEND_FOR = '1h';
/** A bounce also bounces new arrivals for this long (KumoMTA's default). */
const BOUNCE_FOR = '5m';
const SERIES = [
  { metric: 'total_messages_received', label: 'received', color: '#2b7bb9', total: 'total-received' },
  { metric: 'total_messages_delivered', label: 'delivered', color: '#2e9d4a', total: 'total-delivered' },
  { metric: 'total_messages_transfail', label: 'transient failures', color: '#d49a00', total: 'total-transient' },
  { metric: 'total_messages_fail', label: 'bounced', color: '#c8382c', total: 'total-bounced' },
];

const $ = (id) => document.getElementById(id);
/** One sample a poll: seconds since the page opened and the totals of each series. */
const samples = [];
let state = { suspensions: [], readySuspensions: [], bounces: [], readyStates: {} };
/** What each table last showed, so an unchanged table is not rebuilt under the pointer. */
const shown = {};
let skippedEvents = 0;

/** A DOM element; text goes in as text, never as markup (log records carry senders' strings). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setStatus(text, isError) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', Boolean(isError));
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text.trim()}`);
  return text ? JSON.parse(text) : null;
}

/** A labelled family of /metrics.json as {label value: number}, whatever its label is called. */
function labelled(doc, name) {
  const v = doc[name] && doc[name].value;
  if (!v || typeof v !== 'object') return {};
  const inner = Object.values(v)[0];
  return inner && typeof inner === 'object' ? inner : {};
}

const sum = (o) => Object.values(o).reduce((a, b) => a + (typeof b === 'number' ? b : 0), 0);

/** `campaign:tenant@domain!routing_domain`, as crates/message/src/queue_name.rs reads it. */
function parseQueue(name) {
  let left = null;
  let rest = name;
  const at = name.indexOf('@');
  if (at >= 0) { left = name.slice(0, at); rest = name.slice(at + 1); }
  let campaign = null;
  let tenant = null;
  if (left !== null) {
    const c = left.indexOf(':');
    if (c >= 0) { campaign = left.slice(0, c); tenant = left.slice(c + 1); } else tenant = left;
  }
  const bang = rest.indexOf('!');
  const domain = bang >= 0 ? rest.slice(0, bang) : rest;
  const routing = bang >= 0 ? rest.slice(bang + 1) : null;
  return { campaign, tenant, domain, routing_domain: routing };
}

/** Whether a suspension or bounce applies to the scheduled queue `name` (hermod_message::admin::Criteria). */
function applies(rule, name) {
  if (Array.isArray(rule.queue_names) && rule.queue_names.length) return rule.queue_names.includes(name);
  const q = parseQueue(name);
  const same = (want, have) => want == null || want === have;
  const sameCase = (want, have) => want == null || (have != null && want.toLowerCase() === have.toLowerCase());
  return sameCase(rule.domain, q.domain) && sameCase(rule.routing_domain, q.routing_domain)
    && same(rule.campaign, q.campaign) && same(rule.tenant, q.tenant);
}

/** A ready queue's name from its metrics label `<protocol>:<name>` (crates/hermod/src/serve.rs). */
function readyName(service) {
  const c = service.indexOf(':');
  return c >= 0 && service.slice(c + 1).includes('@') ? service.slice(c + 1) : service;
}

function scopeOf(rule) {
  if (Array.isArray(rule.queue_names) && rule.queue_names.length) return rule.queue_names.join(', ');
  const parts = ['domain', 'routing_domain', 'campaign', 'tenant']
    .filter((k) => rule[k] != null).map((k) => `${k}=${rule[k]}`);
  return parts.length ? parts.join(' ') : 'every queue';
}

// ---- rendering ----

/** Replace `tbody`'s rows unless `key` says they are what is already shown. */
function fill(tableId, key, rows) {
  $(`${tableId}-empty`).hidden = rows.length > 0;
  if (shown[tableId] === key) return;
  shown[tableId] = key;
  $(tableId).tBodies[0].replaceChildren(...rows);
}

function badge(text, kind, title) {
  const b = el('span', { class: `badge ${kind || ''}` }, text);
  if (title) b.title = title;
  return b;
}

function button(text, action, data, danger) {
  const attrs = { type: 'button', class: danger ? `${action} danger` : action, 'data-action': action };
  for (const [k, v] of Object.entries(data)) attrs[`data-${k}`] = v;
  return el('button', attrs, text);
}

function renderScheduled(counts) {
  const names = Object.keys(counts).sort();
  const rows = [];
  const keys = [];
  for (const name of names) {
    const susp = state.suspensions.filter((s) => applies(s, name));
    const bounce = state.bounces.filter((b) => applies(b, name));
    const status = [];
    if (susp.length) status.push(badge('suspended', 'suspended', susp.map((s) => s.reason).join('; ')));
    if (bounce.length) status.push(badge('bouncing', 'paused', bounce.map((b) => b.reason).join('; ')));
    if (!status.length) status.push(badge('active'));
    const actions = [
      susp.length ? button('resume', 'resume', { queue: name }) : button('suspend', 'suspend', { queue: name }),
      button('bounce', 'bounce', { queue: name }, true),
    ];
    rows.push(el('tr', { 'data-queue': name },
      el('td', {}, name), el('td', { class: 'num' }, counts[name]), el('td', {}, ...status), el('td', {}, ...actions)));
    keys.push([name, counts[name], susp.length, bounce.length]);
  }
  fill('scheduled', JSON.stringify(keys), rows);
}

function renderReady(queued, conns) {
  const services = Object.keys(queued).sort();
  const rows = [];
  const keys = [];
  for (const service of services) {
    const name = readyName(service);
    const conds = state.readyStates[name] || {};
    const status = Object.entries(conds).map(([cond, v]) => badge(cond, cond, v.context));
    if (!status.length) status.push(badge('active'));
    const suspended = state.readySuspensions.some((s) => s.name === name);
    const action = suspended ? button('resume', 'ready-resume', { queue: name })
      : button('suspend', 'ready-suspend', { queue: name });
    rows.push(el('tr', { 'data-queue': name },
      el('td', {}, name), el('td', { class: 'num' }, queued[service]), el('td', { class: 'num' }, conns[service] || 0),
      el('td', {}, ...status), el('td', {}, action)));
    keys.push([name, queued[service], conns[service] || 0, Object.keys(conds), suspended]);
  }
  fill('ready', JSON.stringify(keys), rows);
}

function renderHealth(queued, conns, doc) {
  const items = [];
  for (const [name, conds] of Object.entries(state.readyStates)) {
    if (conds.paused) {
      items.push(el('li', {}, badge('paused', 'paused'), ` ${name}`,
        el('span', { class: 'detail' }, conds.paused.context)));
    }
  }
  // Broker paths are the custom_lua ready queues (`...@lua:<constructor>`).
  for (const service of Object.keys(queued).sort()) {
    const name = readyName(service);
    if (!/@lua:/.test(name) || (state.readyStates[name] || {}).paused) continue;
    items.push(el('li', {}, badge('up'), ` ${name}`,
      el('span', { class: 'detail' }, `${queued[service]} queued, ${conns[service] || 0} connections`)));
  }
  // Broker families other parts of Hermod export, shown as they come.
  for (const [family, v] of Object.entries(doc)) {
    if (!family.includes('broker')) continue;
    for (const [label, n] of Object.entries(labelled(doc, family))) {
      const text = typeof n === 'number' ? n : (n && typeof n.count === 'number' ? `${n.count} observed` : '');
      items.push(el('li', {}, `${family} ${label}`, el('span', { class: 'detail' }, text)));
    }
    if (typeof v.value === 'number') items.push(el('li', {}, family, el('span', { class: 'detail' }, v.value)));
  }
  if (!items.length) items.push(el('li', { class: 'empty' }, 'No destination is paused and no broker queue is active.'));
  $('health').replaceChildren(...items);
}

function renderDirectives() {
  const rows = [];
  const keys = [];
  const add = (kind, endpoint, id, scope, reason, left) => {
    rows.push(el('tr', { 'data-id': id },
      el('td', {}, kind), el('td', {}, scope), el('td', {}, reason), el('td', {}, left),
      el('td', {}, button('cancel', 'cancel', { endpoint, id }))));
    keys.push([id, left]);
  };
  for (const s of state.suspensions) add('suspension', '/api/admin/suspend/v1', s.id, scopeOf(s), s.reason, s.duration);
  for (const s of state.readySuspensions) add('ready-queue suspension', '/api/admin/suspend-ready-q/v1', s.id, s.name, s.reason, s.duration);
  for (const b of state.bounces) {
    add('bounce', '/api/admin/bounce/v1', b.id, scopeOf(b), `${b.reason} (${b.total_bounced} bounced)`, b.duration);
  }
  fill('directives', JSON.stringify(keys), rows);
}

function renderTotals(totals, scheduled, ready, conns) {
  SERIES.forEach((s, i) => { $(s.total).textContent = totals[i].toLocaleString('en-US'); });
  $('total-scheduled').textContent = sum(scheduled).toLocaleString('en-US');
  $('total-ready').textContent = sum(ready).toLocaleString('en-US');
  $('total-connections').textContent = sum(conns).toLocaleString('en-US');
}

function drawRates() {
  const c = $('rates');
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth;
  const h = c.clientHeight;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 48;
  const right = 8;
  const top = 8;
  const bottom = 22;
  const pw = w - left - right;
  const ph = h - top - bottom;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].t - samples[i - 1].t;
    if (dt <= 0) continue;
    // A counter that went down means the server restarted: count nothing for that step.
    rates.push({ t: samples[i].t, r: samples[i].totals.map((v, k) => Math.max(0, v - samples[i - 1].totals[k]) / dt) });
  }
  const now = samples.length ? samples[samples.length - 1].t : 0;
  const span = Math.min(HISTORY_S, Math.max(MIN_SPAN_S, Math.ceil(now / 10) * 10));
  let max = 1;
  for (const p of rates) for (const v of p.r) max = Math.max(max, v);
  const mag = 10 ** Math.floor(Math.log10(max));
  max = Math.ceil(max / mag) * mag;
  const x = (t) => left + ((t - (now - span)) / span) * pw;
  const y = (v) => top + ph - (v / max) * ph;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#6b7384';
  g.strokeStyle = '#e1e4ea';
  g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const yy = Math.round(y(max * f)) + 0.5;
    g.beginPath(); g.moveTo(left, yy); g.lineTo(left + pw, yy); g.stroke();
    g.textAlign = 'right'; g.textBaseline = 'middle';
    g.fillText(String(+(max * f).toFixed(1)), left - 6, yy);
  }
  g.textAlign = 'center'; g.textBaseline = 'top';
  for (const ago of [span, span / 2, 0]) g.fillText(ago ? `-${ago}s` : 'now', x(now - ago), top + ph + 6);
  g.lineWidth = 2;
  SERIES.forEach((s, k) => {
    g.strokeStyle = s.color;
    g.beginPath();
    let started = false;
    for (const p of rates) {
      if (p.t < now - span) continue;
      if (started) g.lineTo(x(p.t), y(p.r[k])); else { g.moveTo(x(p.t), y(p.r[k])); started = true; }
    }
    g.stroke();
  });
  const last = rates.length ? rates[rates.length - 1].r : SERIES.map(() => 0);
  $('legend').replaceChildren(...SERIES.map((s, k) => {
    const span = el('span', {}, `${s.label} ${last[k].toFixed(1)}/s`);
    span.style.setProperty('--c', s.color);
    return span;
  }));
}

// ---- polling ----

const started = performance.now();

async function poll() {
  try {
    const [doc, states, susp, readySusp, bounces] = await Promise.all([
      api('GET', '/metrics.json'),
      api('GET', '/api/admin/ready-q-states/v1'),
      api('GET', '/api/admin/suspend/v1'),
      api('GET', '/api/admin/suspend-ready-q/v1'),
      api('GET', '/api/admin/bounce/v1'),
    ]);
    state = {
      suspensions: susp || [],
      readySuspensions: readySusp || [],
      bounces: bounces || [],
      readyStates: (states && states.states_by_ready_queue) || {},
    };
    const totals = SERIES.map((s) => sum(labelled(doc, s.metric)));
    samples.push({ t: (performance.now() - started) / 1000, totals });
    while (samples.length > HISTORY_S + 2) samples.shift();
    const scheduled = labelled(doc, 'scheduled_count');
    const ready = labelled(doc, 'ready_count');
    const conns = labelled(doc, 'connection_count');
    renderTotals(totals, scheduled, ready, conns);
    renderScheduled(scheduled);
    renderReady(ready, conns);
    renderHealth(ready, conns, doc);
    renderDirectives();
    drawRates();
    setStatus(`live · updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`, true);
  }
}

async function act(button) {
  const { action, queue, endpoint, id } = button.dataset;
  const reason = 'from the dashboard';
  try {
    if (action === 'suspend') {
      await api('POST', '/api/admin/suspend/v1', { queue_names: [queue], reason: `suspended ${reason}`, duration: SUSPEND_FOR });
    } else if (action === 'resume') {
      for (const s of state.suspensions.filter((x) => applies(x, queue))) {
        await api('DELETE', '/api/admin/suspend/v1', { id: s.id });
      }
    } else if (action === 'bounce') {
      if (!window.confirm(`Bounce every message in ${queue}, and new arrivals for ${BOUNCE_FOR}?`)) return;
      await api('POST', '/api/admin/bounce/v1', { queue_names: [queue], reason: `bounced ${reason}`, duration: BOUNCE_FOR });
    } else if (action === 'ready-suspend') {
      await api('POST', '/api/admin/suspend-ready-q/v1', { name: queue, reason: `suspended ${reason}`, duration: SUSPEND_FOR });
    } else if (action === 'ready-resume') {
      for (const s of state.readySuspensions.filter((x) => x.name === queue)) {
        await api('DELETE', '/api/admin/suspend-ready-q/v1', { id: s.id });
      }
    } else if (action === 'cancel') {
      await api('DELETE', endpoint, { id });
    }
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  await poll();
}

// ---- log events ----

function addEvent(r) {
  const when = new Date((r.timestamp || 0) * 1000).toLocaleTimeString();
  const resp = r.response ? `${r.response.code} ${r.response.content || ''}` : '';
  const rcpt = Array.isArray(r.recipient) ? r.recipient.join(', ') : (r.recipient || '');
  const body = $('events').tBodies[0];
  body.prepend(el('tr', { class: String(r.type || '') },
    el('td', {}, when), el('td', {}, r.type || ''), el('td', {}, r.id || ''), el('td', {}, rcpt),
    el('td', {}, r.queue || ''), el('td', {}, resp)));
  while (body.rows.length > MAX_EVENT_ROWS) body.deleteRow(-1);
}

function startEvents() {
  const source = new EventSource('/dashboard/events');
  source.addEventListener('record', (e) => {
    try { addEvent(JSON.parse(e.data)); } catch (_) { /* a record the page cannot read is skipped */ }
  });
  source.addEventListener('skipped', (e) => {
    skippedEvents += Number(e.data) || 0;
    $('events-note').textContent = `live from the delivery log; ${skippedEvents.toLocaleString('en-US')} left out to keep up`;
  });
}

document.addEventListener('click', (e) => {
  const b = e.target.closest('button[data-action]');
  if (b) act(b);
});
window.addEventListener('resize', drawRates);
startEvents();
poll();
setInterval(poll, POLL_MS);
