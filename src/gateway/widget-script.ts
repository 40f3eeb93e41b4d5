/**
 * The warning banner's script, served at `<session>/.studiopool/widget.js` (docs/widget.md). Plain
 * ES2017 in one closure, no dependencies. It runs only in the top-level document, asks
 * `status` every `pollMs` (the gateway answers it itself: it is never the user's activity), and
 * shows a small banner in a shadow root while a stop is within the warning lead time: the time left
 * and the reason, "Keep working" (an idle stop), "Suspend" (where the provider can) and "Stop"
 * (asks once more). Styles are set through the CSSOM and the DOM is built without innerHTML, so a
 * strict `style-src` or Trusted Types policy does not stop it. The POSTs carry the session's
 * widget token in `X-Studiopool-Token` (the gateway also checks that they come from the page).
 */
export const WIDGET_SCRIPT = String.raw`(function () {
  'use strict';
  if (window.top !== window.self || window.__studiopoolWidget) return;
  window.__studiopoolWidget = true;
  var me = document.currentScript;
  var base = new URL('.', me && me.src ? me.src : location.href).href;
  var REASONS = {
    idle: 'it has been idle',
    lifetime: 'it reached its maximum lifetime',
    budget: 'the budget is used up',
    schedule: 'its schedule ends'
  };
  var st = null, offset = 0, token = '', pollMs = 15000, host = null, ui = null, armed = false, over = null, timer = 0;

  function css(el, props) { for (var k in props) el.style.setProperty(k, props[k]); return el; }
  function make(tag, props, text) {
    var el = document.createElement(tag);
    if (props) css(el, props);
    if (text !== undefined) el.textContent = text;
    return el;
  }
  function button(label, primary, onClick) {
    var b = make('button', {
      font: 'inherit', 'font-size': '13px', cursor: 'pointer', 'border-radius': '5px', padding: '4px 10px',
      margin: '0 6px 0 0', border: '1px solid ' + (primary ? '#1d4ed8' : '#9aa5b1'),
      background: primary ? '#1d4ed8' : '#ffffff', color: primary ? '#ffffff' : '#1d2733'
    }, label);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  function build() {
    host = document.createElement('div');
    host.setAttribute('data-studiopool-widget', '');
    css(host, { all: 'initial', position: 'fixed', right: '16px', bottom: '16px', 'z-index': '2147483647' });
    var root = host.attachShadow ? host.attachShadow({ mode: 'open' }) : host;
    var box = make('div', {
      font: '14px/1.4 system-ui, -apple-system, Segoe UI, sans-serif', color: '#1d2733', background: '#fff7e0',
      border: '1px solid #e0b341', 'border-left': '5px solid #d97706', 'border-radius': '8px', padding: '10px 14px',
      'box-shadow': '0 4px 16px rgba(0,0,0,.18)', 'max-width': '360px'
    });
    box.setAttribute('role', 'alert');
    box.setAttribute('aria-live', 'polite');
    var title = make('div', { 'font-weight': '600', margin: '0 0 2px 0' });
    var detail = make('div', { 'font-size': '13px', margin: '0 0 8px 0' });
    var row = make('div');
    ui = {
      box: box, title: title, detail: detail, row: row,
      keep: button('Keep working', true, function () { act('keep'); }),
      suspend: button('Suspend', false, function () { act('suspend'); }),
      stop: button('Stop', false, function () {
        if (!armed) { armed = true; ui.stop.textContent = 'Stop now? Click again'; return; }
        act('stop');
      })
    };
    row.appendChild(ui.keep); row.appendChild(ui.suspend); row.appendChild(ui.stop);
    box.appendChild(title); box.appendChild(detail); box.appendChild(row);
    root.appendChild(box);
    (document.body || document.documentElement).appendChild(host);
  }

  function left() { return st && st.pendingStop ? st.pendingStop.at - (Date.now() + offset) : 0; }
  function clock(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000)), m = Math.floor(s / 60);
    return m >= 60 ? Math.floor(m / 60) + ' h ' + (m % 60) + ' min' : m + ':' + String(s % 60).padStart(2, '0');
  }

  function render() {
    if (over) {
      if (!host) build();
      ui.title.textContent = over; ui.detail.textContent = '';
      ui.row.style.setProperty('display', 'none');
      host.style.removeProperty('display');
      return;
    }
    if (!st || !st.warn || !st.pendingStop) { if (host) host.style.setProperty('display', 'none'); armed = false; return; }
    if (!host) build();
    host.style.removeProperty('display');
    var ms = left();
    ui.title.textContent = ms > 0 ? 'This session stops in ' + clock(ms) : 'This session is being stopped';
    ui.detail.textContent = 'Because ' + (REASONS[st.pendingStop.reason] || st.pendingStop.reason) + '.' +
      (st.canKeepWorking ? ' Keep working to stay.' : ' Save your work.');
    ui.keep.style.setProperty('display', st.canKeepWorking ? '' : 'none');
    ui.suspend.style.setProperty('display', st.canSuspend ? '' : 'none');
    if (!armed) ui.stop.textContent = 'Stop';
  }

  function take(s) {
    st = s; offset = s.now - Date.now();
    if (s.token) token = s.token;
    if (s.pollMs) pollMs = s.pollMs;
    render();
  }

  function poll() {
    clearTimeout(timer);
    fetch(base + 'status', { credentials: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } })
      .then(function (r) {
        if (r.status === 404) { over = 'This session has ended.'; render(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (s) { if (s) take(s); })
      .catch(function () {})
      .then(function () { if (!over) timer = setTimeout(poll, pollMs); });
  }

  function act(what) {
    armed = false;
    fetch(base + what, {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'x-studiopool-token': token, accept: 'application/json' }
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { ui.detail.textContent = (body && body.error && body.error.message) || ('failed: ' + r.status); return; }
        if (what === 'stop') { over = 'This session was stopped.'; render(); return; }
        if (what === 'suspend') { over = 'This session was suspended. Resume it from the dashboard.'; render(); return; }
        take(body);
      });
    }).catch(function () { ui.detail.textContent = 'The gateway did not answer; try again.'; });
  }

  setInterval(function () { if (st && st.warn) render(); }, 1000);
  poll();
})();
`
