// Switchyard dashboard. Plain JS, no dependencies. Streams GET /v1/live (an `event: live`
// frame every second) with fetch() so the bearer token travels in the Authorization header
// (EventSource cannot send headers). The token lives in sessionStorage only: never in a
// URL, never logged. All data reaches the DOM through textContent / attributes, never HTML.
'use strict';
(() => {
  const KEY = 'switchyard.token';
  const STATES = ['healthy', 'unhealthy', 'ejected', 'draining'];
  const RO_STATES = ['running', 'paused', 'awaiting_approval', 'succeeded', 'aborted', 'rolled_back'];
  const ACTIONS = ['approve', 'pause', 'resume', 'promote', 'abort', 'rollback'];
  const VERDICTS = ['pass', 'fail', 'wait', 'inconclusive'];
  const CONFIRM = { approve: 'Approve: enter the step the rollout waits at?', promote: 'Promote: give the target 100% now?', abort: 'Abort: restore the weights from before the rollout?', rollback: 'Roll back to the previous weights?' };
  const TREND = 60;

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  const pct = (x) => (num(x) * 100).toFixed(2) + '%';
  const ms = (x) => (num(x) < 10 ? num(x).toFixed(1) : String(Math.round(num(x)))) + ' ms';
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '');
  const fmtWeights = (w) => Object.entries(w || {}).map(([k, v]) => k + '=' + num(v)).join(' ');

  let token = null;
  let ctrl = null;
  let retryTimer = 0;
  let staleTimer = 0;
  let backoff = 1000;
  let noticeTimer = 0;
  const cards = new Map();
  const trends = new Map();

  function setStatus(kind, text) {
    const s = $('status');
    s.className = 'status ' + kind;
    s.textContent = text;
  }
  function showAlert(text) {
    const a = $('alert');
    a.textContent = text || '';
    a.hidden = !text;
  }
  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (n.hidden = true), 6000);
  }
  function store(op, v) {
    try {
      if (op === 'get') return sessionStorage.getItem(KEY);
      if (op === 'set') sessionStorage.setItem(KEY, v);
      else sessionStorage.removeItem(KEY);
    } catch (e) {
      /* storage disabled: the token lives in this page only */
    }
    return null;
  }
  const authHeaders = () => (token ? { authorization: 'Bearer ' + token } : {});

  // "401 UNAUTHORIZED: invalid token" from a {"error":{"code","message"}} body.
  async function errorText(res) {
    let code = '';
    let msg = '';
    try {
      const j = await res.json();
      code = String(j.error.code || '');
      msg = String(j.error.message || '');
    } catch (e) {
      /* not JSON */
    }
    return res.status + (code ? ' ' + code : '') + (msg ? ': ' + msg : '');
  }

  // ---- the live stream ----------------------------------------------------------------

  function stop() {
    clearTimeout(retryTimer);
    clearTimeout(staleTimer);
    if (ctrl) ctrl.abort();
    ctrl = null;
  }

  function connect(t) {
    stop();
    token = t;
    backoff = 1000;
    showAlert('');
    $('disconnect').hidden = false;
    open();
  }

  function disconnect() {
    stop();
    token = null;
    store('remove');
    for (const c of cards.values()) c.root.remove();
    cards.clear();
    trends.clear();
    $('disconnect').hidden = true;
    $('meta').textContent = '';
    setStatus('idle', 'not connected');
  }

  function retry(ac, reason) {
    if (ctrl !== ac) return;
    ctrl = null;
    ac.abort();
    clearTimeout(staleTimer);
    const wait = backoff;
    backoff = Math.min(backoff * 2, 15000);
    setStatus('retrying', 'reconnecting in ' + Math.round(wait / 1000) + ' s (' + reason + ')');
    retryTimer = setTimeout(open, wait);
  }

  function watchdog(ac) {
    clearTimeout(staleTimer);
    staleTimer = setTimeout(() => retry(ac, 'no data for 5 s'), 5000);
  }

  async function open() {
    clearTimeout(retryTimer);
    const ac = new AbortController();
    ctrl = ac;
    setStatus('connecting', 'connecting…');
    let res;
    try {
      res = await fetch('/v1/live', { headers: { ...authHeaders(), accept: 'text/event-stream' }, cache: 'no-store', signal: ac.signal });
    } catch (e) {
      return retry(ac, 'gateway unreachable');
    }
    if (ctrl !== ac) return;
    if (res.status === 401 || res.status === 403) {
      const detail = await errorText(res);
      ctrl = null;
      setStatus('denied', res.status === 401 ? 'unauthorized' : 'forbidden');
      showAlert((res.status === 401 ? 'Unauthorized: the token was refused' : 'Forbidden: the token lacks the read scope') + ' (' + detail + '). Enter a valid token and connect again.');
      return;
    }
    if (!res.ok || !res.body) return retry(ac, await errorText(res));
    watchdog(ac);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || ctrl !== ac) break;
        buf = (buf + dec.decode(value, { stream: true })).replace(/\r\n/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          onFrame(frame, ac);
        }
        if (buf.length > 8e6) throw new Error('frame too large');
      }
    } catch (e) {
      /* aborted or broken: fall through to a reconnect */
    }
    retry(ac, 'stream closed');
  }

  function onFrame(frame, ac) {
    let event = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (line === '' || line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v[0] === ' ') v = v.slice(1);
      if (field === 'event') event = v;
      else if (field === 'data') data.push(v);
    }
    if (event !== 'live' || data.length === 0) return;
    let live;
    try {
      live = JSON.parse(data.join('\n'));
    } catch (e) {
      return;
    }
    backoff = 1000;
    watchdog(ac);
    render(live);
  }

  // ---- rendering ----------------------------------------------------------------------

  function colour(name, i) {
    return name === 'blue' ? 'c-blue' : name === 'green' ? 'c-green' : 'c' + (i % 6);
  }

  function render(live) {
    setStatus('live', 'live');
    $('meta').textContent = 'revision ' + num(live.revision) + ' · updated ' + time(live.time);
    const services = Array.isArray(live.services) ? live.services : [];
    const seen = new Set();
    for (const s of services) {
      const name = String(s.name);
      seen.add(name);
      let c = cards.get(name);
      if (!c) {
        c = makeCard(name);
        cards.set(name, c);
        $('services').append(c.root);
      }
      updateCard(c, s);
    }
    for (const [n, c] of cards) {
      if (!seen.has(n)) {
        c.root.remove();
        cards.delete(n);
      }
    }
  }

  function makeCard(name) {
    const root = el('section', 'card');
    root.dataset.service = name;
    const head = el('div', 'card-head');
    head.append(el('h2', '', name));
    const rev = el('span', 'rev');
    head.append(rev);
    const stack = el('div', 'stack');
    stack.setAttribute('aria-label', 'weights');
    const table = el('table', 'versions');
    const hr = el('tr');
    for (const h of ['Version', 'Weight', 'Share', 'In flight', 'Req/s', 'Errors', 'p99', 'Req/s, last 60 s']) hr.append(el('th', '', h));
    const thead = el('thead');
    thead.append(hr);
    table.append(thead);
    const tbody = el('tbody');
    table.append(tbody);
    const eps = el('div', 'endpoints');
    const ro = el('div', 'rollout');
    ro.append(el('h3', '', 'Rollout'));
    const dl = el('dl');
    const fields = {};
    for (const [k, label] of [['state', 'State'], ['step', 'Step'], ['steps', 'Steps'], ['reason', 'Reason'], ['analysis', 'Last analysis'], ['criteria', 'Criteria'], ['started', 'Started']]) {
      const dd = el('dd', 'f-' + k);
      dl.append(el('dt', '', label), dd);
      fields[k] = dd;
    }
    ro.append(dl);
    const actions = el('div', 'actions');
    const buttons = {};
    for (const a of ACTIONS) {
      const b = el('button', 'act act-' + a, a[0].toUpperCase() + a.slice(1));
      b.type = 'button';
      b.dataset.action = a;
      b.addEventListener('click', () => act(c, a));
      actions.append(b);
      buttons[a] = b;
    }
    ro.append(actions);
    const err = el('div', 'card-error');
    err.setAttribute('role', 'alert');
    err.hidden = true;
    ro.append(err);
    const mirror = el('div', 'mirror');
    mirror.hidden = true;
    root.append(head, stack, table, eps, mirror, ro);
    const c = { name, root, rev, stack, tbody, eps, fields, buttons, err, busy: false, rollout: null, mirror };
    return c;
  }

  function updateCard(c, s) {
    c.rev.textContent = 'revision ' + num(s.revision);
    const versions = Object.entries(s.versions || {});
    const total = versions.reduce((n, [, v]) => n + num(v.weight), 0);
    c.stack.replaceChildren();
    c.tbody.replaceChildren();
    c.eps.replaceChildren();
    versions.forEach(([vn, v], i) => {
      const share = total > 0 ? (num(v.weight) / total) * 100 : 0;
      const cls = colour(vn, i);
      if (share > 0) {
        const seg = el('div', 'seg ' + cls, share >= 8 ? vn + ' ' + Math.round(share) + '%' : '');
        seg.style.width = share + '%';
        seg.title = vn + ': ' + share.toFixed(1) + '%';
        c.stack.append(seg);
      }
      const tr = el('tr');
      tr.dataset.version = vn;
      const nameCell = el('td', 'vname');
      nameCell.append(el('span', 'dot ' + cls), document.createTextNode(vn));
      const bar = el('div', 'bar');
      const fill = el('div', 'fill ' + cls);
      fill.style.width = share + '%';
      bar.append(fill);
      const shareCell = el('td', 'share');
      const wrap = el('div', 'sharebox');
      wrap.append(bar, el('span', 'pct', share.toFixed(1) + '%'));
      shareCell.append(wrap);
      const rps = num(v.rps);
      const errCell = el('td', 'err' + (num(v.errorRate) > 0.01 ? ' bad' : ''), pct(v.errorRate));
      tr.append(nameCell, el('td', 'weight', num(v.weight)), shareCell, el('td', 'inflight', num(v.inflight)), el('td', 'rps', rps.toFixed(1)), errCell, el('td', 'p99', rps > 0 ? ms(v.p99Ms) : '—'));
      const tc = el('td', 'trend');
      tc.append(spark(c.name + '\n' + vn, rps));
      tr.append(tc);
      c.tbody.append(tr);

      const box = el('div', 'ep-version');
      box.dataset.version = vn;
      const h = el('h3');
      h.append(el('span', 'dot ' + cls), document.createTextNode(vn + ' endpoints'));
      box.append(h);
      const ul = el('ul');
      for (const e of Array.isArray(v.endpoints) ? v.endpoints : []) {
        const st = STATES.includes(e.state) ? e.state : 'unknown';
        const li = el('li', 'ep');
        li.dataset.endpoint = String(e.id);
        li.dataset.state = st;
        li.append(el('span', 'badge st-' + st, String(e.state)), el('span', 'ep-id', e.id), el('span', 'ep-inflight', num(e.inflight) + ' in flight'));
        ul.append(li);
      }
      if (!ul.firstChild) ul.append(el('li', 'ep none', 'no endpoints'));
      box.append(ul);
      c.eps.append(box);
    });
    updateRollout(c, s.rollout || null);
    updateMirror(c, s.mirror || null);
  }

  // The mirror panel: target, diff rate, counts by result, the last differing samples.
  function updateMirror(c, m) {
    const v = c.mirror;
    v.hidden = !m;
    if (!m) return;
    const k = m.mirror;
    const tb = el('tbody');
    for (const x of (m.samples || []).slice().reverse()) {
      const tr = el('tr');
      tr.dataset.path = x.path;
      for (const t of [time(x.at), x.method + ' ' + x.path, x.result, num(x.served.status) + ' → ' + num(x.mirror.status), x.where, ms(x.latencyDeltaMs)]) tr.append(el('td', '', t));
      tb.append(tr);
    }
    const t = el('table');
    t.append(tb);
    const line = (k ? num(k.percent) + '% to ' + k.to + ' (' + m.source + ')' : 'stopped') + ' · diff rate ' + pct(m.diffRate) + ' of ' + num(m.compared) + ' · ';
    v.replaceChildren(el('h3', '', 'Mirror'), el('div', '', line + Object.entries(m.counts || {}).map(([r, n]) => r + ' ' + num(n)).join(', ')), t);
  }

  function spark(key, rps) {
    let h = trends.get(key);
    if (!h) trends.set(key, (h = []));
    h.push(rps);
    if (h.length > TREND) h.shift();
    const max = Math.max(1, ...h);
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + (TREND - 1) + ' 20');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', 'spark');
    const pl = document.createElementNS(NS, 'polyline');
    // Stretched over the width until a minute of points has arrived.
    const dx = h.length > 1 ? (TREND - 1) / (h.length - 1) : 0;
    pl.setAttribute('points', h.map((y, i) => (i * dx).toFixed(2) + ',' + (19 - (y / max) * 18).toFixed(2)).join(' '));
    svg.append(pl);
    return svg;
  }

  function updateRollout(c, r) {
    c.rollout = r;
    const f = c.fields;
    c.root.dataset.rollout = r ? (RO_STATES.includes(r.state) ? r.state : 'unknown') : 'none';
    if (!r) {
      f.state.replaceChildren(el('span', 'ro ro-none', 'none'));
      for (const k of ['step', 'steps', 'reason', 'analysis', 'criteria', 'started']) f[k].textContent = '—';
    } else {
      const st = RO_STATES.includes(r.state) ? r.state : 'unknown';
      f.state.replaceChildren(el('span', 'ro ro-' + st, String(r.state).replace('_', ' ')));
      const steps = Array.isArray(r.steps) ? r.steps : [];
      f.step.textContent = (r.state === 'awaiting_approval' ? 'awaiting approval to enter ' : '') + 'step ' + (num(r.step) + 1) + '/' + steps.length + ' · ' + num(r.percent) + '% to ' + r.to + (r.baseline ? ' (baseline ' + r.baseline + ')' : '') + ' · every ' + String(r.interval).replace(/^(\d+)000ms$/, '$1s');
      f.steps.replaceChildren(
        ...steps.map((p, i) => el('span', 'chip' + (i < num(r.step) ? ' done' : i === num(r.step) ? ' cur' : ''), num(p) + '%')),
      );
      f.reason.textContent = r.reason || '—';
      const a = r.analysis && r.analysis.last;
      if (a) {
        const side = (x) => (x ? x.version + ': ' + num(x.requests) + ' req, errors ' + pct(x.errorRate) + ', p99 ' + ms(x.p99Ms) : '');
        f.analysis.replaceChildren(el('span', 'verdict v-' + (VERDICTS.includes(a.verdict) ? a.verdict : 'x'), a.verdict), document.createTextNode(' at ' + time(a.at) + ' · ' + side(a.target) + (a.baseline ? ' · ' + side(a.baseline) : '') + (a.reason ? ' · ' + a.reason : '')));
      } else f.analysis.textContent = 'none yet';
      f.criteria.replaceChildren(a && Array.isArray(a.criteria) && a.criteria.length > 0 ? criteriaTable(a.criteria) : document.createTextNode('—'));
      f.started.textContent = time(r.startedAt) + ' by ' + r.actor + (r.endedAt ? ' · ended ' + time(r.endedAt) : '');
    }
    buttons(c);
  }

  // A criterion's value or bound as it reads: a ratio as a percentage, ms, or a number.
  function measure(v, unit) {
    if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
    if (unit === 'ratio') return pct(v);
    if (unit === 'ms') return ms(v);
    return String(Math.round(v * 1e6) / 1e6);
  }

  // The last verdict of every criterion: name, value, bound, verdict (dry runs marked).
  function criteriaTable(list) {
    const t = el('table', 'criteria');
    const hr = el('tr');
    for (const h of ['Criterion', 'Value', 'Bound', 'Verdict']) hr.append(el('th', '', h));
    t.append(hr);
    for (const cr of list) {
      const tr = el('tr');
      tr.dataset.criterion = String(cr.name);
      tr.dataset.verdict = VERDICTS.includes(cr.verdict) ? cr.verdict : 'x';
      if (cr.dryRun) tr.dataset.dryRun = 'true';
      const v = el('td', 'cv');
      v.append(el('span', 'verdict v-' + tr.dataset.verdict, cr.verdict));
      if (cr.dryRun) v.append(el('span', 'dry', ' dry run'));
      const name = el('td', 'cname', cr.name);
      if (cr.reason) name.title = String(cr.reason);
      tr.append(name, el('td', 'cval', measure(cr.value, cr.unit)), el('td', 'cbound', (cr.op === 'min' ? '≥ ' : '≤ ') + measure(cr.bound, cr.unit)), v);
      t.append(tr);
    }
    return t;
  }

  function buttons(c) {
    const st = c.rollout ? c.rollout.state : null;
    const active = st === 'running' || st === 'paused' || st === 'awaiting_approval';
    const ok = { approve: st === 'awaiting_approval', pause: st === 'running', resume: st === 'paused', promote: active, abort: active, rollback: !active };
    for (const a of ACTIONS) c.buttons[a].disabled = c.busy || !ok[a];
  }

  async function act(c, action) {
    if (CONFIRM[action] && !window.confirm(CONFIRM[action] + ' (' + c.name + ')')) return;
    const svc = encodeURIComponent(c.name);
    const path = action === 'rollback' ? '/v1/services/' + svc + '/rollback' : '/v1/services/' + svc + '/rollout/' + action;
    c.busy = true;
    buttons(c);
    c.err.hidden = true;
    try {
      const res = await fetch(path, { method: 'POST', headers: authHeaders(), cache: 'no-store' });
      if (!res.ok) {
        c.err.textContent = action + ' failed: ' + (await errorText(res));
        c.err.hidden = false;
      } else {
        const j = await res.json();
        if (action === 'rollback') notice(c.name + ': rolled back to ' + fmtWeights(j.weights) + ' (revision ' + num(j.revision) + ')');
        else {
          notice(c.name + ': ' + action + ' → rollout ' + String(j.state).replace('_', ' '));
          updateRollout(c, j);
        }
      }
    } catch (e) {
      c.err.textContent = action + ' failed: gateway unreachable';
      c.err.hidden = false;
    } finally {
      c.busy = false;
      buttons(c);
    }
  }

  // ---- start --------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    const input = $('token');
    $('auth').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (/[^\x21-\x7e]/.test(t)) {
        showAlert('A token is printable ASCII without spaces.');
        return;
      }
      store('set', t);
      input.value = '';
      input.placeholder = 'token kept for this tab';
      connect(t);
    });
    $('disconnect').addEventListener('click', disconnect);
    const saved = store('get');
    if (saved !== null) {
      input.placeholder = 'token kept for this tab';
      connect(saved);
    }
  });
})();
