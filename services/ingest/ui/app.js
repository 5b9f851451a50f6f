// Adze dashboard: a page per hash route (#/runs, #/runs/<id>, #/workers, #/flow,
// #/timers, #/settings), drawn from the REST API with the session cookie. No framework and no
// build step: the file is served as written, from the ingest binary.
'use strict';

const STATUSES = ['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'];
const RANGES = [['1h', 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400], ['all', 0]];
const PAGE = 50;
const COUNTS_EVERY = 10000;

const state = { session: null, live: null, timer: null };

// ---- DOM helpers: every text goes through textContent, never innerHTML ----
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') Object.assign(el.style, v); // CSSOM: the policy refuses style attributes
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, kids);
  return el;
}
function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}
const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const k of kids.flat()) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}
// Replaces an element's children (arrays flattened, null and false skipped).
function fill(el, ...kids) {
  el.replaceChildren();
  return append(el, kids);
}
function main(...kids) {
  const m = document.getElementById('main');
  m.replaceChildren();
  append(m, kids);
}
function badge(status) {
  return h('span', { class: 'badge ' + status, 'data-status': status }, status);
}
function toast(text, bad) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.className = bad ? 'bad' : '';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 4000);
}
function confirmAction(text) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
  });
}

// ---- time ----
function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return d.toLocaleString(undefined, { hour12: false });
}
function ago(t) {
  if (!t) return '—';
  const secs = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (secs < 60) return secs + ' s ago';
  if (secs < 3600) return Math.round(secs / 60) + ' min ago';
  if (secs < 86400) return Math.round(secs / 3600) + ' h ago';
  return Math.round(secs / 86400) + ' d ago';
}
function span(ms) {
  if (ms === undefined || ms === null) return '—';
  if (ms < 1) return '< 1 ms';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
}
const ms = (t) => (t ? new Date(t).getTime() : null);

// ---- the API ----
class ApiError extends Error {
  constructor(status, text) { super(text); this.status = status; }
}
async function api(method, path, body) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' };
  if (method !== 'GET') init.headers['x-adze-dashboard'] = '1';
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    const why = data && data.errors && data.errors[0] ? data.errors[0].description : r.statusText;
    if (r.status === 401 || (r.status === 403 && path !== '/api/v1/session')) {
      if (r.status === 401 || /credentials/.test(why)) {
        state.session = null;
        go('#/login');
      }
    }
    throw new ApiError(r.status, why || ('HTTP ' + r.status));
  }
  return data;
}
const tenantPath = (rest) => `/api/v1/tenants/${state.session.tenantId}${rest}`;
const stablePath = (rest) => `/api/v1/stable/tenants/${state.session.tenantId}${rest}`;
function qs(pairs) {
  const p = new URLSearchParams();
  for (const [k, v] of pairs) if (v !== undefined && v !== null && v !== '') p.append(k, v);
  const t = p.toString();
  return t ? '?' + t : '';
}

// ---- live updates: one EventSource at a time, for the page shown ----
function watch(query, onChange) {
  stopWatching();
  const es = new EventSource(stablePath('/live') + query);
  let pending = null;
  es.addEventListener('change', () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; onChange(); }, 150);
  });
  es.addEventListener('end', (e) => {
    toast('Live updates stopped: ' + e.data, true);
    es.close();
    setLive(false);
  });
  es.onopen = () => setLive(true);
  es.onerror = () => setLive(false);
  state.live = es;
}
function stopWatching() {
  if (state.live) state.live.close();
  state.live = null;
  clearInterval(state.timer);
  state.timer = null;
}
function setLive(on) {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = on ? '● live' : '○ not live';
  el.className = on ? 'live' : 'live off';
  el.dataset.live = on ? '1' : '0';
}
const liveMark = () => h('span', { id: 'live', class: 'live off', 'data-live': '0' }, '○ connecting');

// ---- routing ----
function go(hash) {
  if (location.hash !== hash) location.hash = hash;
  else route();
}
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/runs';
  const [path, query] = raw.split('?');
  return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(query || '') };
}
async function route() {
  stopWatching();
  const { parts, params } = parseHash();
  if (!state.session && parts[0] !== 'login') {
    try {
      state.session = await api('GET', '/api/v1/session');
    } catch (_) {
      state.session = null;
    }
    if (!state.session) return go('#/login');
  }
  showChrome(parts[0]);
  try {
    switch (parts[0]) {
      case 'login': return loginPage();
      case 'runs': return parts[1] ? runPage(parts[1]) : runsPage(params);
      case 'workers': return workersPage();
      case 'flow': return flowPage();
      case 'timers': return timersPage();
      case 'settings': return settingsPage();
      default: return go('#/runs');
    }
  } catch (e) {
    main(h('p', { class: 'error' }, String(e.message || e)));
  }
}
function showChrome(page) {
  const top = document.getElementById('top');
  top.hidden = !state.session || page === 'login';
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === page);
  if (state.session) document.getElementById('who').textContent = state.session.tenantName;
}

// ---- sign in / out ----
function loginPage() {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', placeholder: 'API token', 'data-testid': 'token' });
  const err = h('p', { class: 'error', 'data-testid': 'login-error' });
  const form = h('form', {
    class: 'card login',
    onsubmit: async (e) => {
      e.preventDefault();
      err.textContent = '';
      try {
        state.session = await api('POST', '/api/v1/session', { token: input.value });
        go('#/runs');
      } catch (x) {
        err.textContent = x.message;
      }
    },
  },
  h('h1', {}, 'Sign in to Adze'),
  h('p', { class: 'muted' }, 'Paste an API token of your tenant (adze token create, or Settings → API tokens). It is kept in an HTTP-only session cookie for 12 hours.'),
  input, h('button', { class: 'primary', type: 'submit', 'data-testid': 'sign-in' }, 'Sign in'), err);
  main(form);
  input.focus();
}
async function logout() {
  try { await api('DELETE', '/api/v1/session'); } catch (_) { /* signed out either way */ }
  state.session = null;
  go('#/login');
}

// ---- runs list ----
function listQuery(params, withStatus) {
  const range = params.get('range') || '24h';
  const pairs = [];
  if (range === 'custom') {
    // datetime-local values are the browser's local time.
    if (params.get('from')) pairs.push(['since', new Date(params.get('from')).toISOString()]);
    if (params.get('to')) pairs.push(['until', new Date(params.get('to')).toISOString()]);
  } else {
    const secs = (RANGES.find((r) => r[0] === range) || RANGES[1])[1];
    if (secs) pairs.push(['since', new Date(Date.now() - secs * 1000).toISOString()]);
  }
  if (withStatus && params.get('status')) pairs.push(['statuses', params.get('status')]);
  if (params.get('workflow')) pairs.push(['workflow_ids', params.get('workflow')]);
  for (const m of params.getAll('meta')) pairs.push(['additional_metadata', m]);
  return pairs;
}
function setParam(params, key, value) {
  const p = new URLSearchParams(params);
  if (value) p.set(key, value); else p.delete(key);
  p.delete('cursor');
  go('#/runs?' + p.toString());
}

async function runsPage(params) {
  const workflows = await api('GET', tenantPath('/workflows') + qs([['limit', 1000]])).catch(() => ({ rows: [] }));
  const chips = h('div', { class: 'chips', 'data-testid': 'status-counts' });
  const body = h('tbody');
  const pager = h('div', { class: 'pager' });
  const selected = new Set();
  const selCount = h('span', { class: 'muted' });
  const bySel = (what) => h('button', {
    type: 'button', 'data-testid': what + '-selected',
    onclick: () => act(what, { externalIds: [...selected] }, `${what} ${selected.size} selected run(s)?`),
  }, what === 'cancel' ? 'Cancel selected' : 'Replay selected');
  const byFilter = (what) => h('button', {
    type: 'button', 'data-testid': what + '-matching',
    onclick: () => {
      const f = { since: new Date(0).toISOString() };
      for (const [k, v] of listQuery(params, true)) {
        if (k === 'since') f.since = v;
        if (k === 'until') f.until = v;
        if (k === 'statuses') f.statuses = [v];
        if (k === 'workflow_ids') f.workflowIds = [v];
        if (k === 'additional_metadata') (f.additionalMetadata = f.additionalMetadata || []).push(v);
      }
      const n = chips.dataset.total || 'all';
      act(what, { filter: f }, `${what} every run matching these filters (${n} in the window)?`);
    },
  }, what === 'cancel' ? 'Cancel all matching' : 'Replay all matching');
  async function act(what, req, question) {
    if (req.externalIds && req.externalIds.length === 0) return toast('Select runs first', true);
    if (!(await confirmAction(question.charAt(0).toUpperCase() + question.slice(1)))) return;
    try {
      const r = await api('POST', stablePath('/tasks/' + what), req);
      toast(`${what === 'cancel' ? 'Cancellation' : 'Replay'} queued for ${(r && r.ids ? r.ids.length : 0)} run(s)`);
      selected.clear();
      selCount.textContent = '';
      counted = 0;
      load();
    } catch (e) {
      toast(e.message, true);
    }
  }
  const wfSelect = h('select', { 'data-testid': 'workflow-filter', onchange: (e) => setParam(params, 'workflow', e.target.value) },
    h('option', { value: '' }, 'All workflows'),
    (workflows.rows || []).map((w) => h('option', { value: w.metadata.id, selected: w.metadata.id === params.get('workflow') }, w.name)));
  const rangeSelect = h('select', { 'data-testid': 'range-filter', onchange: (e) => setParam(params, 'range', e.target.value) },
    RANGES.map(([r]) => h('option', { value: r, selected: (params.get('range') || '24h') === r }, r === 'all' ? 'All time' : 'Last ' + r)),
    h('option', { value: 'custom', selected: params.get('range') === 'custom' }, 'Between…'));
  const between = (key) => h('input', {
    type: 'datetime-local', value: params.get(key) || '', 'data-testid': key + '-filter',
    onchange: (e) => { const p = new URLSearchParams(params); p.set('range', 'custom'); p.set(key, e.target.value); p.delete('cursor'); go('#/runs?' + p); },
  });
  const metaInput = h('input', { placeholder: 'key:value', value: params.get('meta') || '', 'data-testid': 'meta-filter' });
  const metaForm = h('form', { onsubmit: (e) => { e.preventDefault(); setParam(params, 'meta', metaInput.value.trim()); } }, metaInput);
  main(
    h('h1', {}, 'Runs', liveMark()),
    chips,
    h('div', { class: 'filters' },
      h('label', {}, 'Workflow', wfSelect),
      h('label', {}, 'Created', rangeSelect),
      params.get('range') === 'custom' ? [h('label', {}, 'From', between('from')), h('label', {}, 'To', between('to'))] : null,
      h('label', {}, 'Metadata (key:value, Enter)', metaForm)),
    h('div', { class: 'toolbar' }, bySel('cancel'), bySel('replay'), byFilter('cancel'), byFilter('replay'), selCount),
    h('table', { 'data-testid': 'runs-table' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, 'Run'), h('th', {}, 'Workflow'), h('th', {}, 'Status'),
        h('th', {}, 'Tasks'), h('th', {}, 'Created'), h('th', {}, 'Duration'), h('th', {}, 'Metadata'))),
      body),
    pager);

  // Counts come from hourly sums kept beside the runs, but a metadata filter and the
  // window's part-hours are counted run by run (an hour of a busy tenant's runs), so
  // live changes recount at most every COUNTS_EVERY ms; the page itself is one index read.
  let counted = 0;
  async function load() {
    const cursor = params.get('cursor');
    const recount = Date.now() - counted >= COUNTS_EVERY;
    const [page, counts] = await Promise.all([
      api('GET', stablePath('/workflow-runs') + qs([...listQuery(params, true), ['limit', PAGE], ['include_payloads', 'false'], ['cursor', cursor]])),
      recount ? api('GET', stablePath('/workflow-runs/counts') + qs(listQuery(params, false))).catch(() => null) : null,
    ]);
    if (recount) {
      counted = Date.now();
      drawCounts(counts);
    }
    body.replaceChildren();
    for (const r of page.rows) {
      const id = r.metadata.id;
      const box = h('input', {
        type: 'checkbox', checked: selected.has(id),
        onclick: (e) => { e.stopPropagation(); if (e.target.checked) selected.add(id); else selected.delete(id); selCount.textContent = selected.size ? selected.size + ' selected' : ''; },
      });
      const meta = r.additionalMetadata && typeof r.additionalMetadata === 'object'
        ? Object.entries(r.additionalMetadata).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ') : '';
      body.append(h('tr', { class: 'clickable', 'data-run-id': id, 'data-status': r.status, 'data-workflow': r.workflowName, onclick: () => go('#/runs/' + id) },
        h('td', {}, box),
        h('td', { class: 'mono' }, h('a', { href: '#/runs/' + id, onclick: (e) => e.stopPropagation() }, id)),
        h('td', {}, r.displayName || r.workflowName),
        h('td', {}, badge(r.status)),
        h('td', {}, (r.children || []).length || '—'),
        h('td', { title: when(r.createdAt) }, ago(r.createdAt)),
        h('td', {}, span(r.duration)),
        h('td', { class: 'mono muted' }, meta)));
    }
    if (!page.rows.length) body.append(h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No runs match.')));
    fill(pager,
      cursor ? h('button', { type: 'button', onclick: () => setParam(params, 'cursor', '') }, '« Newest') : null,
      page.pagination && page.pagination.next_cursor
        ? h('button', { type: 'button', 'data-testid': 'next-page', onclick: () => { const p = new URLSearchParams(params); p.set('cursor', page.pagination.next_cursor); go('#/runs?' + p); } }, 'Older »')
        : h('span', { class: 'muted' }, 'End of list'));
  }
  function drawCounts(counts) {
    chips.replaceChildren();
    if (!counts) return;
    let total = 0;
    const current = params.get('status') || '';
    chips.append(h('button', { type: 'button', class: 'chip' + (current ? '' : ' on'), onclick: () => setParam(params, 'status', '') }, 'All'));
    for (const st of STATUSES) {
      const n = counts[st] || 0;
      total += n;
      chips.append(h('button', { type: 'button', class: 'chip' + (current === st ? ' on' : ''), 'data-count': st, onclick: () => setParam(params, 'status', st) },
        badge(st), h('b', {}, n)));
    }
    chips.dataset.total = total;
  }
  await load();
  watch(qs(listQuery(params, true)), () => load().catch((e) => toast(e.message, true)));
}

// ---- a run ----
async function runPage(id) {
  let selectedTask = null;
  const header = h('div');
  const graph = h('div');
  const fall = h('div', { class: 'card waterfall', 'data-testid': 'waterfall' });
  const tasks = h('div', { class: 'card', 'data-testid': 'tasks' });
  const children = h('div', { 'data-testid': 'child-runs' });
  main(header, graph, h('h2', {}, 'Timeline'), fall, h('h2', {}, 'Tasks'), tasks, children);

  async function load() {
    let d;
    try {
      d = await api('GET', `/api/v1/stable/workflow-runs/${encodeURIComponent(id)}`);
    } catch (e) {
      main(h('h1', {}, 'Run not found'), h('p', { class: 'error', 'data-testid': 'run-error' }, e.message), h('a', { href: '#/runs' }, '« All runs'));
      stopWatching();
      return;
    }
    drawHeader(d);
    drawGraph(d);
    drawWaterfall(d);
    await drawTasks(d);
  }

  function drawHeader(d) {
    const r = d.run;
    const meta = r.additionalMetadata && Object.keys(r.additionalMetadata).length ? JSON.stringify(r.additionalMetadata) : '—';
    fill(header,
      h('p', {}, h('a', { href: '#/runs' }, '« All runs')),
      h('h1', { 'data-testid': 'run-title' }, r.displayName, badge(r.status), liveMark()),
      h('div', { class: 'card grid2' },
        field('Run id', h('span', { class: 'mono' }, r.metadata.id)),
        field('Created', when(r.createdAt)),
        field('Started', when(r.startedAt)),
        field('Finished', when(r.finishedAt)),
        field('Duration', span(r.duration)),
        field('Trace id', h('span', { class: 'mono', 'data-testid': 'trace-id' }, d.traceId || '—')),
        field('Metadata', h('span', { class: 'mono' }, meta)),
        r.parentTaskExternalId ? field('Spawned by task', h('span', { class: 'mono' }, r.parentTaskExternalId)) : null),
      h('div', { class: 'toolbar' },
        h('button', { type: 'button', 'data-testid': 'cancel-run', disabled: ['COMPLETED', 'FAILED', 'CANCELLED'].includes(r.status), onclick: () => runAction('cancel') }, 'Cancel run'),
        h('button', { type: 'button', 'data-testid': 'replay-run', disabled: !['COMPLETED', 'FAILED', 'CANCELLED'].includes(r.status), onclick: () => runAction('replay') }, 'Replay run')));
    setLive(state.live && state.live.readyState === 1);
  }
  async function runAction(what) {
    if (!(await confirmAction(`${what === 'cancel' ? 'Cancel' : 'Replay'} run ${id}?`))) return;
    try {
      await api('POST', stablePath('/tasks/' + what), { externalIds: [id] });
      toast(what === 'cancel' ? 'Cancellation queued' : 'Replay queued');
      load();
    } catch (e) {
      toast(e.message, true);
    }
  }

  function drawGraph(d) {
    const byName = new Map(d.tasks.map((t) => [t.displayName, t]));
    const byExt = new Map(d.tasks.map((t) => [t.taskExternalId, t]));
    const nodes = d.shape.length ? d.shape : d.tasks.map((t) => ({ taskName: t.displayName, stepId: t.taskExternalId, childrenStepIds: [] }));
    const byStep = new Map(nodes.map((n) => [n.stepId, n]));
    const depth = new Map();
    const parentsOf = new Map(nodes.map((n) => [n.stepId, []]));
    for (const n of nodes) for (const c of n.childrenStepIds) if (parentsOf.has(c)) parentsOf.get(c).push(n.stepId);
    const depthOf = (step, seen = new Set()) => {
      if (depth.has(step)) return depth.get(step);
      if (seen.has(step)) return 0;
      seen.add(step);
      const ps = parentsOf.get(step) || [];
      const v = ps.length ? Math.max(...ps.map((p) => depthOf(p, seen) + 1)) : 0;
      depth.set(step, v);
      return v;
    };
    const columns = [];
    for (const n of nodes) {
      const c = depthOf(n.stepId);
      (columns[c] = columns[c] || []).push(n);
    }
    const W = 170, H = 40, GX = 70, GY = 22, PAD = 16;
    const pos = new Map();
    columns.forEach((col, ci) => col.forEach((n, ri) => pos.set(n.stepId, { x: PAD + ci * (W + GX), y: PAD + ri * (H + GY) })));
    const width = PAD * 2 + columns.length * (W + GX) - GX;
    const height = PAD * 2 + Math.max(...columns.map((c) => c.length)) * (H + GY) - GY;
    const svg = s('svg', { class: 'dag', viewBox: `0 0 ${width} ${height}`, height: Math.min(height, 520), 'data-testid': 'dag', preserveAspectRatio: 'xMinYMin meet' });
    for (const n of nodes) {
      for (const c of n.childrenStepIds) {
        const a = pos.get(n.stepId), b = pos.get(c);
        if (!a || !b) continue;
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        svg.append(s('path', { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'data-edge': `${n.taskName}->${(byStep.get(c) || {}).taskName}` }));
      }
    }
    for (const n of nodes) {
      const t = byExt.get(n.taskExternalId) || byName.get(n.taskName);
      const status = t ? t.status : 'QUEUED';
      const p = pos.get(n.stepId);
      const label = n.taskName.length > 20 ? n.taskName.slice(0, 19) + '…' : n.taskName;
      const g = s('g', {
        class: 'node' + (selectedTask === n.taskName ? ' sel' : ''), 'data-node': n.taskName, 'data-status': status,
        transform: `translate(${p.x},${p.y})`,
        onclick: () => { selectedTask = n.taskName; const el = document.getElementById('task-' + (t ? t.taskExternalId : '')); if (el) { el.open = true; el.scrollIntoView({ behavior: 'smooth' }); } },
      },
      s('rect', { width: W, height: H, class: 'fill-' + status, rx: 6 }),
      s('text', { x: 10, y: 17 }, label),
      s('text', { x: 10, y: 32, class: 'sub' }, status.toLowerCase() + (t && t.attempt > 1 ? ` · attempt ${t.attempt}` : '') + (t && t.isDurable ? ' · durable' : '')),
      s('title', {}, n.taskName + ': ' + status + (t && t.waitReason ? ' — ' + t.waitReason : '')));
      svg.append(g);
    }
    graph.replaceChildren(svg);
  }

  function drawWaterfall(d) {
    const t0 = ms(d.run.createdAt);
    let t1 = ms(d.run.finishedAt) || Date.now();
    for (const a of d.attempts) t1 = Math.max(t1, ms(a.finishedAt) || 0);
    const total = Math.max(1, t1 - t0);
    const byExt = new Map(d.tasks.map((t) => [t.taskExternalId, t]));
    const byName = new Map(d.tasks.map((t) => [t.displayName, t]));
    const rows = [];
    const sorted = [...d.attempts].sort((a, b) => (ms(a.startedAt) || Infinity) - (ms(b.startedAt) || Infinity));
    for (const a of sorted) {
      const t = byExt.get(a.taskExternalId);
      const name = t ? t.displayName : a.taskExternalId.slice(-12);
      // Ready from: the previous attempt's end, else the latest parent's end, else the run's creation.
      const prev = d.attempts.filter((x) => x.taskExternalId === a.taskExternalId && x.attempt === a.attempt - 1)[0];
      let ready = t0;
      if (prev && prev.finishedAt) ready = ms(prev.finishedAt);
      else if (t && t.parents) for (const p of t.parents) { const pt = byName.get(p); if (pt && pt.finishedAt) ready = Math.max(ready, ms(pt.finishedAt)); }
      const start = ms(a.startedAt);
      const end = ms(a.finishedAt) || (start ? Date.now() : null);
      const pct = (v) => ((v - t0) / total) * 100;
      const track = h('div', { class: 'track' });
      const waitEnd = start || ms(a.finishedAt) || Date.now();
      track.append(h('div', { class: 'wait', style: { left: pct(ready) + '%', width: Math.max(0.3, pct(waitEnd) - pct(ready)) + '%' }, title: 'waiting ' + span(waitEnd - ready) }));
      if (start) track.append(h('div', { class: 'exec ' + a.status, style: { left: pct(start) + '%', width: Math.max(0.5, pct(end) - pct(start)) + '%' }, title: 'running ' + span(end - start) }));
      rows.push(h('div', { class: 'row', 'data-attempt-bar': `${name}#${a.attempt}` },
        h('span', {}, name, a.attempt > 1 ? ` (attempt ${a.attempt})` : ''), track,
        h('span', { class: 'muted' }, start ? span(end - start) : (a.finishedAt ? 'never ran' : 'waits ' + span(waitEnd - ready)))));
    }
    fall.replaceChildren();
    append(fall, [
      h('p', { class: 'muted' }, 'Grey: waiting (for parents, a retry\'s backoff, a slot or a limit). Colour: running, by outcome. ', span(total), ' in all.'),
      rows.length ? rows : h('p', { class: 'empty' }, 'No attempt has started yet.')]);
  }

  async function drawTasks(d) {
    const open = new Set([...tasks.querySelectorAll('details[open]')].map((e) => e.id));
    const parts = [];
    const childLists = [];
    for (const t of d.tasks) {
      const attempts = d.attempts.filter((a) => a.taskExternalId === t.taskExternalId).sort((a, b) => a.attempt - b.attempt);
      const events = d.taskEvents.filter((e) => e.taskId === t.taskExternalId);
      const det = h('details', { id: 'task-' + t.taskExternalId, open: open.has('task-' + t.taskExternalId), 'data-task': t.displayName, ontoggle: (e) => { if (e.target.open) loadLogs(t, logBox); } });
      const logBox = h('div', { 'data-testid': 'logs' });
      det.append(
        h('summary', {}, h('b', {}, t.displayName), ' ', badge(t.status),
          t.attempt > 1 ? h('span', { class: 'muted' }, ` · ${t.attempt} attempts`) : '',
          t.isDurable ? h('span', { class: 'muted' }, ' · durable') : '',
          t.waitReason ? h('span', {}, ' ', h('span', { class: 'reason', 'data-testid': 'wait-reason' }, 'waits: ' + t.waitReason + (t.waitUntil ? ' (until ' + when(t.waitUntil) + ')' : ''))) : ''),
        h('table', { 'data-testid': 'attempts' },
          h('thead', {}, h('tr', {}, ['Attempt', 'Status', 'Worker', 'Assigned', 'Started', 'Finished', 'Ran for', 'Error'].map((c) => h('th', {}, c)))),
          h('tbody', {}, attempts.map((a) => h('tr', { 'data-attempt': a.attempt, 'data-status': a.status },
            h('td', {}, a.attempt), h('td', {}, badge(a.status)), h('td', { class: 'mono' }, a.workerId ? a.workerId.slice(-12) : '—'),
            h('td', {}, when(a.assignedAt)), h('td', {}, when(a.startedAt)), h('td', {}, when(a.finishedAt)),
            h('td', {}, a.startedAt && a.finishedAt ? span(ms(a.finishedAt) - ms(a.startedAt)) : '—'),
            h('td', { class: 'error' }, a.errorMessage || ''))))),
        h('div', { class: 'grid2' },
          h('div', {}, h('span', {}, 'Input'), h('pre', { 'data-testid': 'input' }, JSON.stringify(t.input, null, 2))),
          h('div', {}, h('span', {}, 'Output'), h('pre', { 'data-testid': 'output' }, t.output && Object.keys(t.output).length ? JSON.stringify(t.output, null, 2) : '—'))),
        t.errorMessage ? h('pre', { class: 'error' }, t.errorMessage) : '',
        events.length ? h('details', {}, h('summary', {}, `Events (${events.length})`),
          h('ul', {}, events.map((e) => h('li', {}, when(e.timestamp), ' ', h('b', {}, e.eventType), ' ', e.message || '', e.errorMessage ? ' — ' + e.errorMessage : '')))) : '',
        h('h3', {}, 'Logs'), logBox);
      if (t.isDurable) {
        const logList = h('div', { 'data-testid': 'durable-log' });
        det.append(h('h3', {}, 'Durable event log'), logList);
        api('GET', stablePath('/durable-tasks/' + t.taskExternalId)).then((entries) => {
          logList.replaceChildren(entries && entries.length ? h('table', {},
            h('thead', {}, h('tr', {}, ['Position', 'Kind', 'Call', 'Invocation', 'Satisfied'].map((c) => h('th', {}, c)))),
            h('tbody', {}, entries.map((e) => h('tr', {}, h('td', {}, `${e.branchId}:${e.nodeId}`), h('td', {}, e.kind), h('td', { class: 'mono' }, e.call),
              h('td', {}, e.invocation), h('td', {}, e.isSatisfied ? when(e.satisfiedAt) : 'waiting'))))) : h('p', { class: 'muted' }, 'Nothing logged yet.'));
        }).catch((e) => logList.replaceChildren(h('p', { class: 'error' }, e.message)));
      }
      if (det.open) loadLogs(t, logBox);
      parts.push(h('div', { class: 'task' }, det));
      if (t.numSpawnedChildren > 0 || t.isDurable) childLists.push(t);
    }
    tasks.replaceChildren(...parts);
    const lists = await Promise.all(childLists.map((t) => api('GET', stablePath('/workflow-runs') + qs([['parent_task_external_id', t.taskExternalId], ['limit', 200], ['include_payloads', 'false']]))
      .then((p) => [t, p.rows]).catch(() => [t, []])));
    children.replaceChildren(...lists.filter(([, rows]) => rows.length).map(([t, rows]) => h('div', {},
      h('h2', {}, `Child runs of ${t.displayName} (${rows.length})`),
      h('table', {}, h('tbody', {}, rows.map((r) => h('tr', { class: 'clickable', 'data-child-run': r.metadata.id, onclick: () => go('#/runs/' + r.metadata.id) },
        h('td', { class: 'mono' }, h('a', { href: '#/runs/' + r.metadata.id }, r.metadata.id.slice(-12))), h('td', {}, r.displayName), h('td', {}, badge(r.status)), h('td', {}, span(r.duration)))))))));
  }
  async function loadLogs(t, box) {
    try {
      const page = await api('GET', `/api/v1/stable/tasks/${t.taskExternalId}/logs` + qs([['limit', 500]]));
      const rows = page.rows || [];
      box.replaceChildren(rows.length ? h('pre', {}, rows.map((l) => `${when(l.createdAt)} ${l.level || ''} ${l.attempt ? '[' + l.attempt + '] ' : ''}${l.message}\n`).join('')) : h('p', { class: 'muted' }, 'No log lines.'));
    } catch (e) {
      box.replaceChildren(h('p', { class: 'error' }, e.message));
    }
  }

  await load();
  watch(qs([['run', id]]), () => load().catch((e) => toast(e.message, true)));
}
function field(label, value) {
  return h('div', {}, h('span', {}, label), value);
}

// ---- workers ----
async function workersPage() {
  const body = h('tbody');
  main(h('h1', {}, 'Workers'), h('table', { 'data-testid': 'workers-table' },
    h('thead', {}, h('tr', {}, ['Name', 'Status', 'Slots used / total', 'Actions', 'Labels', 'Last heartbeat', 'Last task accepted', ''].map((c) => h('th', {}, c)))), body));
  async function load() {
    const list = await api('GET', tenantPath('/worker') + qs([['limit', 500]]));
    body.replaceChildren();
    for (const w of list.rows || []) {
      const slots = w.slotConfig && w.slotConfig.default ? w.slotConfig.default : null;
      const used = w.slotsUsed !== undefined ? w.slotsUsed : (slots ? slots.limit - slots.available : null);
      const labels = (w.labels || []).map((l) => `${l.key}=${l.value}`).join(', ');
      const paused = w.status === 'PAUSED';
      body.append(h('tr', { 'data-worker': w.metadata.id, 'data-status': w.status },
        h('td', {}, w.name, h('div', { class: 'mono muted' }, w.metadata.id.slice(-12))),
        h('td', {}, badge(w.status)),
        h('td', {}, slots ? `${used} / ${slots.limit}` : '—'),
        h('td', { class: 'mono' }, (w.actions || []).join(', ')),
        h('td', {}, labels || '—'),
        h('td', { title: when(w.lastHeartbeatAt) }, ago(w.lastHeartbeatAt)),
        h('td', { title: when(w.lastTaskAcceptedAt) }, ago(w.lastTaskAcceptedAt)),
        h('td', {}, w.status === 'INACTIVE' ? '' : h('button', {
          type: 'button', 'data-testid': paused ? 'resume-worker' : 'pause-worker',
          onclick: async () => {
            if (!(await confirmAction(`${paused ? 'Resume' : 'Pause'} worker ${w.name}? ${paused ? '' : 'It finishes what it runs and takes no new task.'}`))) return;
            try { await api('PATCH', '/api/v1/workers/' + w.metadata.id, { isPaused: !paused }); load(); } catch (e) { toast(e.message, true); }
          },
        }, paused ? 'Resume' : 'Pause'))));
    }
    if (!(list.rows || []).length) body.append(h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No workers have registered.')));
  }
  await load();
  state.timer = setInterval(() => load().catch(() => {}), 3000);
}

// ---- flow control ----
async function flowPage() {
  const keys = h('tbody');
  const limits = h('tbody');
  const note = h('p', { class: 'muted' });
  main(h('h1', {}, 'Flow control'),
    h('h2', {}, 'Concurrency keys'),
    h('table', { 'data-testid': 'concurrency-table' }, h('thead', {}, h('tr', {}, ['Key', 'Workflow', 'Expression', 'Strategy', 'Running', 'Max runs', 'Queued'].map((c) => h('th', {}, c)))), keys),
    h('h2', {}, 'Rate limits'), note,
    h('table', { 'data-testid': 'rate-limits-table' }, h('thead', {}, h('tr', {}, ['Key', 'Remaining', 'Limit', 'Window', 'Window began', 'Paused until'].map((c) => h('th', {}, c)))), limits));
  async function load() {
    const [k, r] = await Promise.all([
      api('GET', stablePath('/concurrency')).catch((e) => ({ error: e.message })),
      api('GET', tenantPath('/rate-limits') + qs([['limit', 500]])).catch((e) => ({ error: e.message })),
    ]);
    keys.replaceChildren();
    const krows = Array.isArray(k) ? k : (k.rows || []);
    if (k.error) keys.append(h('tr', {}, h('td', { colspan: 7, class: 'error' }, k.error)));
    for (const c of krows) {
      keys.append(h('tr', { 'data-key': c.value || c.key },
        h('td', { class: 'mono', title: c.key }, c.value || c.key), h('td', {}, c.workflowName || '—'), h('td', { class: 'mono' }, c.expression || '—'),
        h('td', {}, c.strategy || '—'), h('td', {}, c.running), h('td', {}, c.maxRuns === undefined || c.maxRuns === null ? '—' : c.maxRuns), h('td', {}, c.queued)));
    }
    if (!k.error && !krows.length) keys.append(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No key holds or waits.')));
    limits.replaceChildren();
    if (r.error) limits.append(h('tr', {}, h('td', { colspan: 6, class: 'error' }, r.error)));
    const rrows = r.rows || [];
    note.textContent = rrows.some((x) => x.remainingKnown === false) ? 'The rate limiter did not answer: remaining units are not known right now.' : '';
    for (const l of rrows) {
      limits.append(h('tr', { 'data-limit': l.key },
        h('td', { class: 'mono' }, l.key), h('td', {}, l.remainingKnown === false ? '?' : l.value), h('td', {}, l.limitValue), h('td', {}, l.window),
        h('td', {}, when(l.lastRefill)), h('td', {}, l.pausedUntil ? when(l.pausedUntil) : '—')));
    }
    if (!r.error && !rrows.length) limits.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No rate limits are defined.')));
  }
  await load();
  state.timer = setInterval(() => load().catch(() => {}), 3000);
}

// ---- crons and schedules ----
async function timersPage() {
  const crons = h('tbody');
  const scheduled = h('tbody');
  main(h('h1', {}, 'Crons & schedules'),
    h('h2', {}, 'Crons'),
    h('table', { 'data-testid': 'crons-table' }, h('thead', {}, h('tr', {}, ['Name', 'Workflow', 'Expression', 'Enabled', 'Created', ''].map((c) => h('th', {}, c)))), crons),
    h('h2', {}, 'Scheduled runs'),
    h('table', { 'data-testid': 'scheduled-table' }, h('thead', {}, h('tr', {}, ['Workflow', 'Runs at', 'Run', ''].map((c) => h('th', {}, c)))), scheduled));
  const remove = (what, path, label) => h('button', {
    type: 'button', class: 'danger',
    onclick: async () => {
      if (!(await confirmAction(`Delete ${what} ${label}?`))) return;
      try { await api('DELETE', path); load(); } catch (e) { toast(e.message, true); }
    },
  }, 'Delete');
  async function load() {
    const [c, sc] = await Promise.all([
      api('GET', tenantPath('/workflows/crons') + qs([['limit', 500]])),
      api('GET', tenantPath('/workflows/scheduled') + qs([['limit', 500]])),
    ]);
    crons.replaceChildren(...(c.rows || []).map((x) => h('tr', { 'data-cron': x.metadata.id },
      h('td', {}, x.name || '—'), h('td', {}, x.workflowName), h('td', { class: 'mono' }, x.cron), h('td', {}, x.enabled ? 'yes' : 'no'),
      h('td', {}, when(x.metadata.createdAt)),
      h('td', {}, remove('cron', tenantPath('/workflows/crons/' + x.metadata.id), x.name || x.cron)))));
    if (!(c.rows || []).length) crons.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No crons.')));
    scheduled.replaceChildren(...(sc.rows || []).map((x) => h('tr', { 'data-scheduled': x.metadata.id },
      h('td', {}, x.workflowName), h('td', {}, when(x.triggerAt)),
      h('td', {}, x.workflowRunId ? h('a', { href: '#/runs/' + x.workflowRunId }, x.workflowRunId.slice(-12), ' ', x.workflowRunStatus || '') : 'not yet'),
      h('td', {}, x.workflowRunId ? '' : remove('scheduled run', tenantPath('/workflows/scheduled/' + x.metadata.id), 'at ' + when(x.triggerAt))))));
    if (!(sc.rows || []).length) scheduled.append(h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'No scheduled runs.')));
  }
  await load();
  state.timer = setInterval(() => load().catch(() => {}), 5000);
}

// ---- settings: API tokens ----
// '' asks for the default: a year, or as long as the signed-in token lives if shorter.
const LIFETIMES = [['1 year (at most as long as your token)', ''], ['1 day', '24h'], ['30 days', '720h'], ['90 days', '2160h']];
async function settingsPage() {
  const body = h('tbody');
  const name = h('input', { type: 'text', name: 'name', maxlength: 255, required: true, placeholder: 'Token name (e.g. worker-prod)', 'data-testid': 'token-name' });
  const life = h('select', { name: 'expiresIn', 'data-testid': 'token-lifetime' }, LIFETIMES.map(([label, v]) => h('option', { value: v }, label)));
  const shown = h('div', { 'data-testid': 'new-token', hidden: true });
  const form = h('form', {
    class: 'card',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const made = await api('POST', tenantPath('/api-tokens'), life.value ? { name: name.value, expiresIn: life.value } : { name: name.value });
        const out = h('input', { type: 'text', readonly: true, class: 'mono wide', value: made.token, 'data-testid': 'new-token-value', onclick: (ev) => ev.target.select() });
        fill(shown,
          h('p', {}, h('strong', {}, 'Copy this token now: it is not shown again.')),
          out,
          h('pre', { class: 'mono' }, `export HATCHET_CLIENT_TOKEN="${made.token}"`),
          h('button', { type: 'button', onclick: async () => { try { await navigator.clipboard.writeText(made.token); toast('Copied'); } catch (_) { out.select(); } } }, 'Copy'));
        shown.hidden = false;
        name.value = '';
        load();
      } catch (x) {
        toast(x.message, true);
      }
    },
  }, h('h2', {}, 'Create a token'), name, life, h('button', { class: 'primary', type: 'submit', 'data-testid': 'create-token' }, 'Create'));
  main(h('h1', {}, 'Settings'),
    h('h2', {}, 'API tokens'),
    h('p', { class: 'muted' }, 'Tokens of this tenant. Workers and SDKs use one as HATCHET_CLIENT_TOKEN. Revoking one refuses it everywhere within a second and closes its open worker streams.'),
    h('table', { 'data-testid': 'tokens-table' }, h('thead', {}, h('tr', {}, ['Name', 'Id', 'Created', 'Expires', 'Key', ''].map((c) => h('th', {}, c)))), body),
    form, shown);
  async function load() {
    const list = await api('GET', tenantPath('/api-tokens'));
    body.replaceChildren();
    for (const t of list.rows || []) {
      body.append(h('tr', { 'data-token': t.metadata.id },
        h('td', {}, t.name),
        h('td', { class: 'mono' }, t.metadata.id),
        h('td', { title: when(t.metadata.createdAt) }, ago(t.metadata.createdAt)),
        h('td', {}, when(t.expiresAt)),
        h('td', {}, String(t.key)),
        h('td', {}, h('button', {
          type: 'button', class: 'danger', 'data-testid': 'revoke-token',
          onclick: async () => {
            if (!(await confirmAction(`Revoke token ${t.name}? Workers and clients using it are refused within a second.`))) return;
            try { await api('POST', '/api/v1/api-tokens/' + t.metadata.id); toast(`Token ${t.name} revoked`); load(); } catch (e) { toast(e.message, true); }
          },
        }, 'Revoke'))));
    }
    if (!(list.rows || []).length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No live tokens.')));
  }
  await load();
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  document.getElementById('logout').addEventListener('click', logout);
  route();
});
