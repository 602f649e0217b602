// Coffer console: the only script. No inline script anywhere (the CSP
// forbids it); everything here works on the server's own pages.
'use strict';
(function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : '';
  }

  // 1. Secret fields (values, files, passwords, tokens) are emptied once
  //    their form has been submitted (the browser has built the request by
  //    then) and whenever a page comes back from the back/forward cache,
  //    so that no value stays in the DOM.
  function clearSecrets(root) {
    root.querySelectorAll('[data-secret]').forEach(function (el) { el.value = ''; });
  }
  document.querySelectorAll('form').forEach(function (f) {
    f.addEventListener('submit', function () { setTimeout(function () { clearSecrets(f); }, 0); });
  });
  window.addEventListener('pageshow', function () { clearSecrets(document); });
  window.addEventListener('pagehide', function () { clearSecrets(document); });

  // 2. Put forms: show the input of the chosen source only.
  document.querySelectorAll('form[data-put]').forEach(function (f) {
    function show() {
      var src = f.querySelector('input[name="source"]:checked');
      f.querySelectorAll('[data-source]').forEach(function (d) {
        var on = src && d.dataset.source === src.value;
        d.hidden = !on;
        if (!on) { clearSecrets(d); }
      });
    }
    f.addEventListener('change', show);
    show();
  });

  // 3. Live parts: [data-refresh] is re-fetched (an HTML fragment the
  //    server rendered and escaped) every second while a rollout is
  //    pending, else every few seconds, only while the page is visible.
  document.querySelectorAll('[data-refresh]').forEach(function (el) {
    var slow = parseInt(el.dataset.interval || '3000', 10);
    function pending() {
      var p = el.querySelector('[data-pending]');
      return p && p.dataset.pending !== '0';
    }
    function tick() {
      if (document.visibilityState !== 'visible') { return later(); }
      fetch(el.dataset.refresh, { headers: { 'X-Coffer-Fragment': '1' }, cache: 'no-store', credentials: 'same-origin' })
        .then(function (r) {
          if (r.status === 401) { window.location.assign('/ui/login?m=expired'); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html === null || html === undefined) { return; }
          var doc = new DOMParser().parseFromString(html, 'text/html');
          var next = doc.body.firstElementChild;
          if (next) { el.replaceChildren(document.adoptNode(next)); }
        })
        .catch(function () {})
        .then(later);
    }
    function later() { setTimeout(tick, pending() ? 1000 : slow); }
    later();
  });

  // Helpers for the JSON previews: build DOM nodes, never HTML strings.
  function node(tag, text, cls) {
    var n = document.createElement(tag);
    if (text !== undefined && text !== null) { n.textContent = String(text); }
    if (cls) { n.className = cls; }
    return n;
  }
  function table(head, rows) {
    var t = node('table', null, 'list'), th = node('thead'), tr = node('tr'), tb = node('tbody');
    head.forEach(function (h) { tr.appendChild(node('th', h)); });
    th.appendChild(tr); t.appendChild(th);
    rows.forEach(function (r) {
      var row = node('tr', null, r.cls || '');
      r.cells.forEach(function (c) { row.appendChild(node('td', c)); });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }
  function post(url, body) {
    return fetch(url, {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (r.status === 401) { window.location.assign('/ui/login?m=expired'); }
      return r.json();
    });
  }
  function fields(form) {
    var out = {};
    new FormData(form).forEach(function (v, k) { if (k !== 'csrf') { out[k] = String(v); } });
    return out;
  }
  function debounce(fn) {
    var t;
    return function () { clearTimeout(t); t = setTimeout(fn, 300); };
  }

  // 4. Binding form: a live dry run of the binding as typed.
  var pf = document.querySelector('form[data-preview]');
  if (pf) {
    var out = document.getElementById('preview');
    var seq = 0;
    var run = function () {
      var f = fields(pf);
      if (!f.name || !f.secret || !f.selector) { return; }
      var mine = ++seq;
      post(pf.dataset.preview, f).then(function (j) {
        if (mine !== seq) { return; }
        var parts = [];
        if (j.error) {
          parts.push(node('p', j.error, 'warn'));
        } else {
          var effects = j.effects || [];
          parts.push(node('p', 'Saving would ' + (j.change === 'created' ? 'create' : j.change === 'updated' ? 'update' : 'not change') +
            ' the binding; ' + effects.length + ' file change(s) in running containers.', 'ok'));
          if (effects.length) {
            parts.push(table(['Host', 'Container', 'Change', 'Secret', 'File'], effects.map(function (e) {
              return { cls: 'change-' + e.change, cells: [e.agent, e.container_name, e.change, e.secret, e.file] };
            })));
          }
          (j.secrets_missing || []).forEach(function (s) {
            parts.push(node('p', 'Secret ' + s + ' does not exist yet: nothing is delivered until it does.', 'warn'));
          });
        }
        out.replaceChildren.apply(out, parts);
      }).catch(function () {});
    };
    pf.addEventListener('input', debounce(run));
    run();
  }

  // 5. Label-set evaluation: which files would such a container get?
  var ef = document.querySelector('form[data-evaluate]');
  if (ef) {
    var eout = document.getElementById('evaluated');
    ef.addEventListener('submit', function (e) { e.preventDefault(); });
    ef.addEventListener('input', debounce(function () {
      post(ef.dataset.evaluate, fields(ef)).then(function (j) {
        var parts = [];
        if (j.error) {
          parts.push(node('p', j.error, 'warn'));
        } else {
          var g = j.granted || [];
          parts.push(node('p', g.length + ' file(s) granted.', 'ok'));
          if (g.length) {
            parts.push(table(['Binding', 'Secret', 'File'], g.map(function (x) { return { cells: [x.binding, x.secret, '/run/secrets/' + x.file] }; })));
          }
          (j.shadowed || []).forEach(function (s) {
            parts.push(node('p', 'Binding ' + s.binding + ' is hidden: ' + (s.by ? s.by : 'another binding') + ' has the file ' + s.file + '.', 'hint'));
          });
          var u = j.unmatched || [];
          if (u.length) {
            parts.push(table(['Not matching', 'Secret', 'Why'], u.map(function (x) { return { cells: [x.binding, x.secret, x.reason] }; })));
          }
        }
        eout.replaceChildren.apply(eout, parts);
      }).catch(function () {});
    }));
  }
})();
