// The customer's page (issue 17). Plain JavaScript, no framework, no build step: reads billing's
// API with the signed-in token and stays live through the bill stream (server-sent events read
// with fetch, so the token travels in the Authorization header, never in a URL).
'use strict';

const TOKEN_KEY = 'wattle.token';
const CUSTOMER_KEY = 'wattle.customer';
const RECONNECT_MAX_MS = 15000;

const state = {
  token: null,
  customer: null,
  bill: null,
  tariffs: [],
  zone: 'UTC',
  view: 'day',
  anchor: null, // local date YYYY-MM-DD the view contains
  usage: null,
  lastEventId: null,
  stream: null,
  reload: null,
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value;
    // Through the CSSOM: the Content-Security-Policy forbids style attributes.
    else if (key === 'style') node.style.cssText = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// ---- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, raw) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` }, cache: 'no-store' });
  if (!response.ok) {
    let body = { code: `http_${response.status}`, message: response.statusText };
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, body.code, body.message || body.code);
  }
  return raw ? response : response.json();
}

// ---- money, numbers and time ---------------------------------------------------------------

function money(amount, currency) {
  const value = Number(amount);
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(value);
  } catch (_) {
    return `${amount} ${currency}`;
  }
}
function num(value, digits) {
  return Number(value).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

// Minutes the zone is ahead of UTC at an instant.
function offsetMinutes(zone, utcMs) {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).formatToParts(new Date(utcMs));
  const get = (type) => Number(parts.find((part) => part.type === type).value);
  return (Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second')) - utcMs) / 60000;
}
// The UTC instant (ms) of local midnight starting `date` (YYYY-MM-DD) in the zone.
function localMidnight(zone, date) {
  const [y, m, d] = date.split('-').map(Number);
  const guess = Date.UTC(y, m - 1, d);
  let at = guess - offsetMinutes(zone, guess) * 60000;
  const again = offsetMinutes(zone, at);
  at = guess - again * 60000;
  return at;
}
function localDate(zone, utcMs) {
  return new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' })
    .format(new Date(utcMs));
}
function addDays(date, days) {
  const [y, m, d] = date.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}
function addMonths(date, months) {
  const [y, m] = date.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1 + months, 1)).toISOString().slice(0, 10);
}
function weekday(date) {
  const [y, m, d] = date.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d)).getUTCDay(); // 0 = Sunday
}
function formatDate(date, options) {
  const [y, m, d] = date.split('-').map(Number);
  return new Intl.DateTimeFormat(undefined, { timeZone: 'UTC', ...options }).format(new Date(Date.UTC(y, m - 1, d)));
}
function formatTime(zone, utcMs, options) {
  return new Intl.DateTimeFormat(undefined, { timeZone: zone, ...options }).format(new Date(utcMs));
}

// ---- sign-in -------------------------------------------------------------------------------

function showSignIn(message) {
  $('app').hidden = true;
  $('who').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  $('token').focus();
}

function signOut(message) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(CUSTOMER_KEY);
  state.token = null;
  state.lastEventId = null;
  if (location.pathname !== '/') history.replaceState(null, '', '/');
  showSignIn(message);
}

async function start() {
  // An identity provider may send the customer back with the token in the fragment.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('access_token')) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get('access_token'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (!state.token) return showSignIn();
  let me;
  try {
    me = await api('/v1/me');
  } catch (error) {
    return signOut(error.status === 401 ? `Sign-in refused: ${error.message}` : error.message);
  }
  const fromPath = (location.pathname.match(/^\/customers\/([^/]+)$/) || [])[1];
  const customer = me.customer_id || (fromPath && decodeURIComponent(fromPath)) || sessionStorage.getItem(CUSTOMER_KEY);
  if (!customer) return signOut('This is a staff token: enter the customer number to open.');
  state.customer = customer;
  if (location.pathname !== `/customers/${enc(customer)}`) history.replaceState(null, '', `/customers/${enc(customer)}`);
  $('sign-in').hidden = true;
  $('app').hidden = false;
  $('who').hidden = false;
  $('customer-id').textContent = customer;
  try {
    await loadAll();
  } catch (error) {
    if (error.status === 401 || error.status === 403) return signOut(error.message);
    $('live').textContent = `could not load: ${error.message}`;
    return;
  }
  follow();
}

async function loadAll() {
  state.bill = await api(`/v1/customers/${enc(state.customer)}/bill`);
  try { state.tariffs = await api('/v1/tariffs'); } catch (_) { state.tariffs = []; }
  const version = tariffVersions()[0];
  state.zone = version ? version.tariff.time_zone : 'UTC';
  // The day of the latest settled quarter-hour (the ledger's clock may be well past it).
  const latest = state.bill.latest_interval_start;
  state.anchor = localDate(state.zone, latest != null ? latest * 1000 : Date.parse(state.bill.as_of) - 1000);
  renderBill();
  renderPrices();
  await Promise.all([loadUsage(), loadInvoices()]);
}

// ---- the running bill ----------------------------------------------------------------------

function renderBill() {
  const bill = state.bill;
  document.title = `${money(bill.total, bill.currency)} so far · your energy bill`;
  const total = $('total');
  total.textContent = money(bill.total, bill.currency);
  total.dataset.amount = bill.total;
  total.dataset.ledgerIndex = String(bill.ledger_index);
  total.dataset.intervals = String(bill.intervals_settled);
  if (bill.period) {
    const end = addDays(bill.period.end_date, -1);
    $('period').textContent = `Billing period ${formatDate(bill.period.start_date, { dateStyle: 'long' })} to ${formatDate(end, { dateStyle: 'long' })}`;
  } else {
    $('period').textContent = 'All energy settled so far';
  }
  $('as-of').textContent = `Includes everything the ledger settled up to ${formatTime(state.zone, Date.parse(bill.as_of), { dateStyle: 'medium', timeStyle: 'short' })} (ledger position ${bill.ledger_index}); ${num(bill.energy_import_kwh, 2)} kWh imported, ${num(bill.energy_export_kwh, 2)} kWh exported.`;
  renderCompleteness(bill.completeness);
  const body = $('lines').tBodies[0];
  body.replaceChildren();
  for (const line of bill.lines) {
    const unit = { kwh: 'kWh', kw: 'kW', day: 'days', money: bill.currency }[line.unit] || line.unit;
    const price = line.unit_price == null ? 'varies' : line.unit === 'money' ? `${num(Number(line.unit_price) * 100, 0)} %` : money(line.unit_price, bill.currency);
    const row = el('tr', { class: Number(line.amount) < 0 ? 'credit' : '' },
      el('td', {}, line.description + (line.correction ? ' (correction)' : '')),
      el('td', { class: 'num' }, `${num(line.quantity, line.unit === 'day' ? 0 : 2)} ${unit}`),
      el('td', { class: 'num' }, price),
      el('td', { class: 'num amount' }, money(line.amount, bill.currency)));
    body.append(row);
  }
  const foot = $('lines').tFoot;
  foot.replaceChildren(
    el('tr', {}, el('td', { colspan: '3' }, 'Net'), el('td', { class: 'num' }, money(bill.net_total, bill.currency))),
    el('tr', {}, el('td', { colspan: '3' }, 'VAT'), el('td', { class: 'num' }, money(bill.vat_total, bill.currency))),
    el('tr', {}, el('td', { colspan: '3' }, 'Total'), el('td', { class: 'num' }, money(bill.total, bill.currency))));
}

function renderCompleteness(c) {
  const bar = $('completeness-bar');
  bar.replaceChildren();
  const elapsed = Math.max(c.intervals_elapsed || 0, 1);
  const parts = Object.entries(c.by_quality || {}).map(([quality, count]) => [quality, count]);
  if (c.missing) parts.push(['missing', c.missing]);
  const words = [];
  for (const [quality, count] of parts) {
    bar.append(el('span', { class: `q-${quality}`, style: `width:${(100 * count) / elapsed}%`, title: `${count} ${quality}` }));
    words.push(`${count} ${quality.replace('_', ' ')}`);
  }
  const text = `${words.join(', ') || 'nothing yet'} of ${c.intervals_elapsed} quarter-hours so far (${c.intervals_in_period} in the period).`;
  bar.setAttribute('aria-label', text);
  $('completeness-text').textContent = text + (c.missing ? ' Missing ones are estimated at the close if their readings never arrive.' : '');
}

// ---- prices --------------------------------------------------------------------------------

// The versions of the bill's tariff, newest first.
function tariffVersions() {
  const id = state.bill && state.bill.tariff;
  return state.tariffs.filter((entry) => entry.id === id).sort((a, b) => (a.valid_from < b.valid_from ? 1 : -1));
}

const WINDOW_COLOURS = { peak: '#c0392b', offpeak: '#1f7a8c', weekend: '#3f5fa8', dynamic: '#7b4fa0', flat: '#2f6fb0' };
const SPARE_COLOURS = ['#b5651d', '#2e8b57', '#8e44ad', '#34495e', '#d35400'];
function windowColour(window) {
  const name = (window || 'flat').split('.').pop();
  if (WINDOW_COLOURS[name]) return WINDOW_COLOURS[name];
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return SPARE_COLOURS[hash % SPARE_COLOURS.length];
}

function renderPrices() {
  const box = $('prices');
  box.replaceChildren();
  const versions = tariffVersions();
  if (!versions.length) {
    box.append(el('p', { class: 'meta' }, 'Your tariff is not published yet.'));
    return;
  }
  const currency = state.bill.currency;
  for (const entry of versions) {
    const tariff = entry.tariff;
    const from = String(entry.valid_from).replace('T', ' ').slice(0, 16);
    const to = entry.valid_to ? ` until ${String(entry.valid_to).replace('T', ' ').slice(0, 16)}` : '';
    box.append(el('h3', { class: 'small' }, `From ${from}${to}`));
    const energy = tariff.energy;
    if (energy.kind === 'flat') {
      box.append(el('p', {}, `One price all day: ${money(energy.per_kwh, currency)} per kWh.`));
    } else if (energy.kind === 'dynamic') {
      box.append(el('p', {}, `The price follows the market every quarter-hour (the line in the chart), plus ${money(energy.markup_per_kwh || 0, currency)} per kWh. Use energy when the line is low.`));
    } else if (energy.kind === 'time_of_use') {
      const windows = energy.seasons.flatMap((season) => season.windows.map((w) => ({ ...w, season: season.name })));
      const cheapest = Math.min(...windows.map((w) => Number(w.per_kwh)));
      const list = el('ul', { class: 'prices' });
      for (const w of windows.sort((a, b) => Number(a.per_kwh) - Number(b.per_kwh))) {
        const days = [...w.days].join(', ').replace('weekday', 'weekdays').replace('weekend', 'weekends').replace('holiday', 'holidays');
        list.append(el('li', { class: Number(w.per_kwh) === cheapest ? 'cheapest' : '' },
          el('span', { class: 'swatch', style: `background:${windowColour(w.name)}`, 'aria-hidden': 'true' }),
          `${money(w.per_kwh, currency)} per kWh, ${days} ${w.from}–${w.to} (${w.name})${Number(w.per_kwh) === cheapest ? ' · cheapest' : ''}`));
      }
      box.append(list);
    }
  }
  box.append(el('p', { class: 'meta' }, `Times are local time in ${state.zone}. Network charges, levies and VAT come on top (see your bill's lines).`));
}

// ---- usage chart ---------------------------------------------------------------------------

function viewRange() {
  const zone = state.zone;
  let fromDate;
  let toDate;
  let groupBy;
  if (state.view === 'day') {
    fromDate = state.anchor;
    toDate = addDays(fromDate, 1);
    groupBy = 'interval';
  } else if (state.view === 'week') {
    fromDate = addDays(state.anchor, -((weekday(state.anchor) + 6) % 7));
    toDate = addDays(fromDate, 7);
    groupBy = 'hour';
  } else {
    fromDate = `${state.anchor.slice(0, 7)}-01`;
    toDate = addMonths(fromDate, 1);
    groupBy = 'day';
  }
  return { fromDate, toDate, from: localMidnight(zone, fromDate), to: localMidnight(zone, toDate), groupBy };
}

function rangeLabel(range) {
  if (state.view === 'day') return formatDate(range.fromDate, { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' });
  if (state.view === 'week') return `${formatDate(range.fromDate, { day: 'numeric', month: 'short' })} – ${formatDate(addDays(range.toDate, -1), { day: 'numeric', month: 'short', year: 'numeric' })}`;
  return formatDate(range.fromDate, { month: 'long', year: 'numeric' });
}

async function loadUsage() {
  const range = viewRange();
  $('range-label').textContent = rangeLabel(range);
  const path = `/v1/customers/${enc(state.customer)}/usage?from=${range.from / 1000}&to=${range.to / 1000}&group_by=${range.groupBy}&page_size=3000`;
  state.usage = { range, page: await api(path) };
  renderChart();
}

// Where a group sits in the view: its slot index and the number of slots.
function slots(range) {
  if (state.view === 'month') {
    const count = Math.round((Date.parse(range.toDate) - Date.parse(range.fromDate)) / 86400000);
    return { count, index: (group) => Math.round((Date.parse(group.key) - Date.parse(range.fromDate)) / 86400000) };
  }
  const seconds = state.view === 'day' ? 900 : 3600;
  const count = Math.round((range.to - range.from) / 1000 / seconds);
  return { count, index: (group) => Math.floor((group.start - range.from / 1000) / seconds) };
}

function renderChart() {
  const { range, page } = state.usage;
  const currency = page.currency;
  const groups = page.groups;
  const layout = slots(range);
  // Drawn at the width it is shown at (a phone's 350 px or a desktop's 960), so text stays legible.
  const W = Math.round(Math.min(960, Math.max(320, $('chart').clientWidth || 960)));
  const H = W < 600 ? 240 : 330; const L = 44; const R = 52; const T = 26; const B = 40;
  const plotW = W - L - R; const plotH = H - T - B;
  state.narrow = W < 600;
  const importMax = Math.max(0.001, ...groups.map((g) => Number(g.import_kwh)));
  const exportMax = Math.max(0, ...groups.map((g) => Number(g.export_kwh)));
  const top = niceCeil(importMax);
  const bottom = exportMax > 0 ? niceCeil(exportMax) : 0;
  const y = (kwh) => T + (plotH * (top - kwh)) / (top + bottom);
  const prices = groups.filter((g) => g.energy_price != null).map((g) => Number(g.energy_price));
  const priceTop = niceCeil(Math.max(0.01, ...prices));
  const priceBottom = Math.min(0, ...prices);
  const py = (price) => T + (plotH * (priceTop - price)) / (priceTop - priceBottom);
  const slotW = plotW / Math.max(layout.count, 1);
  const x = (index) => L + index * slotW;

  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title chart-summary' });
  chart.append(svg('title', { id: 'chart-title' }, `Usage and cost, ${rangeLabel(range)}`));
  for (const tick of [0, top / 2, top, -bottom]) {
    if (tick < 0 && bottom === 0) continue;
    chart.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(tick), y2: y(tick) }));
    chart.append(svg('text', { x: L - 6, y: y(tick) + 4, 'text-anchor': 'end' }, `${num(Math.abs(tick), tick && Math.abs(tick) < 1 ? 2 : 1)}`));
  }
  chart.append(svg('text', { x: L - 6, y: 12, 'text-anchor': 'end' }, 'kWh'));
  if (prices.length) {
    for (const tick of [priceBottom, priceTop / 2, priceTop]) {
      chart.append(svg('text', { x: W - R + 6, y: py(tick) + 4 }, num(tick, 2)));
    }
    chart.append(svg('text', { x: W - 2, y: 12, 'text-anchor': 'end' }, `${currency}/kWh`));
  }
  chart.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: y(0), y2: y(0) }));
  let pricePath = '';
  for (const group of groups) {
    const index = layout.index(group);
    if (index < 0 || index >= layout.count) continue;
    const bar = svg('g', { class: group.quality && group.quality.estimated ? 'estimated' : '' });
    const colour = windowColour(group.windows[0]);
    const imported = Number(group.import_kwh);
    const exported = Number(group.export_kwh);
    const gap = slotW > 6 ? 1 : 0;
    if (imported > 0) bar.append(svg('rect', { x: x(index) + gap / 2, y: y(imported), width: Math.max(slotW - gap, 0.5), height: y(0) - y(imported), fill: colour }));
    if (exported > 0) bar.append(svg('rect', { class: 'export', x: x(index) + gap / 2, y: y(0), width: Math.max(slotW - gap, 0.5), height: y(-exported) - y(0) }));
    bar.append(svg('title', {}, describeGroup(group, currency)));
    chart.append(bar);
    if (group.energy_price != null) {
      const yy = py(Number(group.energy_price));
      pricePath += `${pricePath ? 'L' : 'M'}${x(index)},${yy}H${x(index) + slotW}`;
    }
  }
  if (pricePath) chart.append(svg('path', { class: 'price', d: pricePath }));
  for (const [index, label] of xLabels(range, layout.count)) {
    chart.append(svg('text', { x: x(index), y: H - B + 18, 'text-anchor': 'middle' }, label));
  }
  $('chart').replaceChildren(chart);
  renderLegend(groups, prices.length > 0);
  renderSummary(groups, currency, range);
  renderUsageTable(groups, currency);
}

function niceCeil(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function xLabels(range, count) {
  const labels = [];
  if (state.view === 'day') {
    const step = state.narrow ? 6 : 3;
    for (let hour = 0; hour <= 24; hour += step) labels.push([Math.min(hour * 4, count), `${String(hour).padStart(2, '0')}:00`]);
  } else if (state.view === 'week') {
    for (let day = 0; day < 7; day += 1) labels.push([day * 24 + 12, formatDate(addDays(range.fromDate, day), state.narrow ? { weekday: 'narrow' } : { weekday: 'short', day: 'numeric' })]);
  } else {
    for (let day = 0; day < count; day += state.narrow ? 7 : 5) labels.push([day + 0.5, String(day + 1)]);
  }
  return labels;
}

function groupTime(group) {
  return state.view === 'month' ? formatDate(group.key, { weekday: 'short', day: 'numeric', month: 'short' })
    : formatTime(state.zone, group.start * 1000, { weekday: state.view === 'week' ? 'short' : undefined, hour: '2-digit', minute: '2-digit' });
}

function describeGroup(group, currency) {
  const when = groupTime(group);
  const price = group.energy_price != null ? `, ${group.windows.join('/') || 'price'} ${money(group.energy_price, currency)}/kWh` : '';
  const quality = Object.keys(group.quality || {}).join(', ');
  return `${when}: ${num(group.import_kwh, 3)} kWh in, ${num(group.export_kwh, 3)} kWh out, ${money(group.cost, currency)}${price} (${quality})`;
}

function renderLegend(groups, withPrice) {
  const legend = $('legend');
  legend.replaceChildren();
  const windows = [...new Set(groups.flatMap((g) => g.windows))];
  for (const window of windows) {
    legend.append(el('li', {}, el('span', { class: 'swatch', style: `background:${windowColour(window)}`, 'aria-hidden': 'true' }), `Imported, ${window} price`));
  }
  if (groups.some((g) => Number(g.export_kwh) > 0)) {
    legend.append(el('li', {}, el('span', { class: 'swatch', style: 'background:var(--export)', 'aria-hidden': 'true' }), 'Exported (solar)'));
  }
  if (withPrice) legend.append(el('li', {}, el('span', { class: 'swatch line', 'aria-hidden': 'true' }), 'Energy price per kWh'));
  if (groups.some((g) => g.quality && g.quality.estimated)) legend.append(el('li', {}, 'Faded: estimated'));
}

function renderSummary(groups, currency, range) {
  const imported = groups.reduce((sum, g) => sum + Number(g.import_kwh), 0);
  const exported = groups.reduce((sum, g) => sum + Number(g.export_kwh), 0);
  const cost = groups.reduce((sum, g) => sum + Number(g.cost_unrounded), 0);
  const priced = groups.filter((g) => g.energy_price != null);
  let cheapest = '';
  if (priced.length) {
    const best = priced.reduce((a, b) => (Number(b.energy_price) < Number(a.energy_price) ? b : a));
    cheapest = ` Cheapest energy: ${money(best.energy_price, currency)}/kWh (${groupTime(best)}).`;
  }
  $('chart-summary').textContent = groups.length
    ? `${rangeLabel(range)}: ${num(imported, 2)} kWh imported, ${num(exported, 2)} kWh exported, ${money(cost.toFixed(2), currency)} over ${groups.length} ${state.view === 'day' ? 'quarter-hours' : state.view === 'week' ? 'hours' : 'days'} with readings.${cheapest}`
    : `${rangeLabel(range)}: no readings yet.`;
}

function renderUsageTable(groups, currency) {
  const body = $('usage-table').tBodies[0];
  body.replaceChildren(...groups.map((g) => el('tr', {},
    el('td', {}, groupTime(g)),
    el('td', { class: 'num' }, num(g.import_kwh, 3)),
    el('td', { class: 'num' }, num(g.export_kwh, 3)),
    el('td', {}, g.windows.join(', ')),
    el('td', { class: 'num' }, g.energy_price == null ? '' : money(g.energy_price, currency)),
    el('td', { class: 'num' }, money(g.cost, currency)),
    el('td', {}, Object.entries(g.quality || {}).map(([q, n]) => `${n} ${q}`).join(', ')))));
}

function setView(view) {
  state.view = view;
  for (const button of document.querySelectorAll('.views button')) button.setAttribute('aria-pressed', String(button.dataset.view === view));
  loadUsage().catch(showError);
}

function shift(direction) {
  if (state.view === 'day') state.anchor = addDays(state.anchor, direction);
  else if (state.view === 'week') state.anchor = addDays(state.anchor, 7 * direction);
  else state.anchor = addMonths(state.anchor, direction);
  loadUsage().catch(showError);
}

function showError(error) {
  if (error.status === 401 || error.status === 403) signOut(error.message);
  else $('chart-summary').textContent = `Could not load: ${error.message}`;
}

// ---- invoices ------------------------------------------------------------------------------

async function loadInvoices() {
  const [{ invoices }, { credit_notes: notes }] = await Promise.all([
    api(`/v1/customers/${enc(state.customer)}/invoices`),
    api(`/v1/customers/${enc(state.customer)}/credit-notes`),
  ]);
  const list = $('invoices');
  list.replaceChildren();
  $('no-invoices').hidden = invoices.length > 0;
  for (const invoice of invoices.slice().reverse().slice(0, 24)) {
    const digest = el('p', { class: 'digest' }, 'digest: …');
    const period = `${formatDate(invoice.period_start_date || localDate(state.zone, invoice.period_start * 1000), { dateStyle: 'medium' })} – ${formatDate(addDays(invoice.period_end_date || localDate(state.zone, invoice.period_end * 1000), -1), { dateStyle: 'medium' })}`;
    const number = invoice.number;
    const download = (label, path, name) => el('button', { type: 'button', class: 'quiet', onclick: () => save(path, name).catch(showError) }, label);
    // What credit notes did to it: the status, the balance, a replacement.
    const status = [];
    if (invoice.status === 'voided') status.push(`Void${invoice.replaced_by ? `, replaced by ${invoice.replaced_by}` : ''}`);
    if (invoice.status === 'credited') status.push(`Credited ${money(invoice.credited, invoice.currency)}: ${money(invoice.balance, invoice.currency)} due`);
    if (invoice.replaces) status.push(`Replaces ${invoice.replaces}`);
    const credits = notes.filter((note) => note.invoice === number).map((note) => el('li', {},
      el('span', {}, `Credit note ${note.number} (${note.kind === 'void' ? 'void' : 'partial'}): ${note.reason} `),
      el('span', { class: 'amount' }, money(note.total, note.currency)), ' ',
      download('Document (JSON)', `/v1/credit-notes/${enc(note.number)}`, `${note.number}.json`),
      download('Receipt', `/v1/credit-notes/${enc(note.number)}/receipt`, `${note.number}.receipt.bin`)));
    list.append(el('li', { class: invoice.status === 'voided' ? 'voided' : '' },
      el('div', { class: 'head' }, el('strong', {}, number), el('span', {}, period), el('span', { class: 'amount' }, money(invoice.total, invoice.currency))),
      status.length ? el('p', { class: 'status' }, status.join(' · ')) : '',
      credits.length ? el('ul', { class: 'credits' }, ...credits) : '',
      el('div', { class: 'actions' },
        download('Printable invoice', `/v1/invoices/${enc(number)}?format=html`, `${number}.html`),
        download('CSV', `/v1/invoices/${enc(number)}?format=csv`, `${number}.csv`),
        download('Document (JSON)', `/v1/invoices/${enc(number)}`, `${number}.json`),
        download('Receipt', `/v1/invoices/${enc(number)}/receipt`, `${number}.receipt.bin`),
        download('Usage (Green Button XML)', `/v1/customers/${enc(state.customer)}/usage?from=${invoice.period_start}&to=${invoice.period_end}&format=xml&page_size=3000`, `${number}.usage.xml`)),
      digest));
    documentDigest(number).then((hex) => { digest.textContent = `SHA-256 of the document (what the receipt binds): ${hex}`; }).catch(() => { digest.textContent = ''; });
  }
}

async function documentDigest(number) {
  const response = await api(`/v1/invoices/${enc(number)}`, true);
  const bytes = await response.arrayBuffer();
  const hash = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function save(path, name) {
  const response = await api(path, true);
  const url = URL.createObjectURL(await response.blob());
  const link = el('a', { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- live: the bill stream -----------------------------------------------------------------

function setLive(text, on) {
  const live = $('live');
  live.textContent = text;
  live.classList.toggle('on', on);
  live.classList.toggle('off', !on);
}

function parseEvent(raw) {
  const event = { event: 'message', data: [], id: null };
  for (const line of raw.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event.event = value;
    else if (field === 'data') event.data.push(value);
    else if (field === 'id') event.id = value;
  }
  event.data = event.data.join('\n');
  return event;
}

function handle(event) {
  if (event.event === 'bill') {
    const previous = state.bill;
    state.bill = JSON.parse(event.data);
    renderBill();
    if (previous && previous.period && state.bill.period && previous.period.start !== state.bill.period.start) {
      loadInvoices().catch(showError);
    }
  } else if (event.event === 'intervals') {
    const { intervals } = JSON.parse(event.data);
    const range = state.usage && state.usage.range;
    if (range && intervals.some((i) => i.start * 1000 >= range.from && i.start * 1000 < range.to)) scheduleUsageReload();
  } else if (event.event === 'reset') {
    state.lastEventId = null;
    scheduleUsageReload();
    loadInvoices().catch(showError);
  } else if (event.event === 'error') {
    const body = JSON.parse(event.data);
    signOut(`Signed out: ${body.message}`);
    return;
  }
  if (event.id) state.lastEventId = event.id;
}

function scheduleUsageReload() {
  clearTimeout(state.reload);
  state.reload = setTimeout(() => loadUsage().catch(showError), 250);
}

// Follows the stream; on a drop, reconnects with Last-Event-ID so nothing settled meanwhile is lost.
async function follow() {
  const control = new AbortController();
  state.stream = control;
  let delay = 1000;
  while (!control.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
      if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
      const response = await fetch(`/v1/customers/${enc(state.customer)}/bill/stream`, { headers, signal: control.signal, cache: 'no-store' });
      if (response.status === 401 || response.status === 403) {
        let body = {};
        try { body = await response.json(); } catch (_) { /* not JSON */ }
        return signOut(`Signed out: ${body.message || response.statusText}`);
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setLive('live', true);
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const raw = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
          handle(parseEvent(raw));
          if (control.signal.aborted) return;
        }
      }
    } catch (_) {
      if (control.signal.aborted) return;
    }
    setLive('reconnecting…', false);
    await sleep(delay);
    delay = Math.min(delay * 2, RECONNECT_MAX_MS);
  }
}

// ---- wiring --------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    const customer = $('customer-field').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    if (customer) sessionStorage.setItem(CUSTOMER_KEY, customer);
    $('token').value = '';
    start();
  });
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  for (const button of document.querySelectorAll('.views button')) button.addEventListener('click', () => setView(button.dataset.view));
  window.addEventListener('resize', () => {
    clearTimeout(state.resize);
    state.resize = setTimeout(() => { if (state.usage) renderChart(); }, 200);
  });
  $('prev').addEventListener('click', () => shift(-1));
  $('next').addEventListener('click', () => shift(1));
  start();
});
