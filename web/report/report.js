// kdseg report: draws the page from window.KDSEG_REPORT (inlined by `kdseg report`). Plain DOM and
// SVG, no framework. The slice viewer uses NiiVue when it was bundled and WebGL2 works, else the
// static PNG slices. The title turns to "kdseg report: ready" once the viewer shows a volume (or
// "kdseg report: ready (static slices)"), and to "kdseg report: error" on any error.
(function () {
  'use strict';
  var R = window.KDSEG_REPORT || {};
  var REGIONS = ['et', 'wt', 'tc'];
  var REGION_NAMES = { et: 'ET', wt: 'WT', tc: 'TC' };
  var PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1', '#edc948',
    '#9c755f', '#ff9da7', '#bab0ac'];
  var SVG_NS = 'http://www.w3.org/2000/svg';
  // BraTS label colours (as `kdseg montage` draws them): 1 NCR red, 2 ED green, 4 ET yellow.
  var BRATS_LUT = {
    R: [0, 230, 40, 0, 250], G: [0, 40, 200, 0, 230], B: [0, 40, 60, 0, 30],
    A: [0, 255, 255, 0, 255], I: [0, 1, 2, 3, 4], labels: ['', 'NCR', 'ED', '', 'ET']
  };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    append(e, children);
    return e;
  }
  function svg(tag, attrs, children) {
    var e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    append(e, children);
    return e;
  }
  function setAttrs(e, attrs) {
    for (var k in attrs || {}) {
      if (k === 'text') e.textContent = attrs[k];
      else if (k === 'class') e.setAttribute('class', attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
  }
  function append(e, children) {
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
  }
  function isNum(v) { return typeof v === 'number' && isFinite(v); }
  function fmt(v, digits) { return isNum(v) ? v.toFixed(digits) : '–'; }
  function body(sectionId) { return document.querySelector('#' + sectionId + ' .body'); }
  function note(text) { return el('p', { 'class': 'note', text: text }); }

  var methodColour = (function () {
    var known = {};
    (R.methods || []).forEach(function (m, i) { known[m] = PALETTE[i % PALETTE.length]; });
    var next = Object.keys(known).length;
    return function (m) {
      if (!(m in known)) known[m] = PALETTE[next++ % PALETTE.length];
      return known[m];
    };
  })();

  // ---------------------------------------------------------------- header and notes
  function renderHeader() {
    $('title').textContent = 'kdseg report: ' + (R.title || '');
    var kind = { experiment: 'Experiment', run: 'Training run', runs: 'Training runs' }[R.kind] || '';
    $('subtitle').textContent = kind + ' ' + (R.source || '') +
      (R.seeds && R.seeds.length ? ' · seeds ' + R.seeds.join(', ') : '') +
      ' · generated ' + (R.generated || '') + ' by kdseg ' + (R.kdseg_version || '');
    var notes = $('notes');
    (R.notes || []).forEach(function (n) { notes.appendChild(el('li', { text: n })); });
    var nv = R.niivue;
    $('footer').textContent = 'kdseg ' + (R.kdseg_version || '') + '. ' +
      (nv ? 'Slice viewer: NiiVue ' + (nv.version || '') + ' (' + (nv.license || '') + '), bundled beside this page.'
        : 'Slice viewer: static PNG slices (NiiVue not bundled).') +
      ' The data behind this page: report.json.';
  }

  // ---------------------------------------------------------------- results table
  // "dice_et" -> "Dice ET"; "lw_hd95_wt" -> "Lesion-wise HD95 WT".
  function columnTitle(c) {
    var lw = c.indexOf('lw_') === 0;
    var parts = (lw ? c.slice(3) : c).split('_');
    return (lw ? 'Lesion-wise ' : '') + (parts[0] === 'dice' ? 'Dice ' : 'HD95 ') + REGION_NAMES[parts[1]];
  }
  function isHd95(c) {
    return c.indexOf('hd95') === 0 || c.indexOf('lw_hd95') === 0;
  }
  function renderTable() {
    var b = body('results');
    var t = R.table;
    if (!t || !t.rows || !t.rows.length) {
      b.appendChild(note('No results table: no metrics were found (see the notes above).'));
      return;
    }
    var best = t.best || {};
    var head = el('tr', {}, [el('th', { text: 'Method' })].concat(t.columns.map(function (c) {
      return el('th', { text: columnTitle(c) + (isHd95(c) ? ' (mm)' : '') });
    })));
    var rows = t.rows.map(function (row) {
      var cells = t.columns.map(function (c) {
        var cell = row.cells[c];
        if (!cell) return el('td', { text: '–' });
        var digits = isHd95(c) ? 2 : 3;
        var isBest = (best[c] || []).indexOf(row.method) >= 0;
        var td = el('td', { 'class': isBest ? 'best' : '' }, [
          (isBest ? '★ ' : '') + fmt(cell.mean, digits) + (isNum(cell.std) ? ' ± ' + fmt(cell.std, digits) : '')
        ]);
        if ('median' in cell) td.appendChild(el('div', { 'class': 'median', text: 'median ' + fmt(cell.median, digits) }));
        if (isBest) td.title = 'best in this column';
        return td;
      });
      var name = el('th', { scope: 'row' }, [el('span', { 'class': 'dot', style: 'background:' + methodColour(row.method) }), row.method]);
      return el('tr', { 'class': row.aux ? 'aux' : '' }, [name].concat(cells));
    });
    b.appendChild(el('table', { 'class': 'results', id: 'results-table' }, [
      el('caption', { text: 'Mean ± std' + (t.rows[0].cells[t.columns[0]] && 'median' in t.rows[0].cells[t.columns[0]] ? ' and median' : '') +
        ' (' + (t.basis || '') + '). Dice: higher is better; HD95: lower is better; ★ best value per column.' }),
      el('thead', {}, [head]), el('tbody', {}, rows)
    ]));
    if (R.paired && R.paired.length) {
      var keys = ['a', 'b', 'metric', 'diff', 'ci95', 'n_cases', 'verdict'];
      b.appendChild(el('h3', { text: 'Paired comparisons' }));
      b.appendChild(el('table', { 'class': 'plain' }, [
        el('thead', {}, [el('tr', {}, keys.map(function (k) { return el('th', { text: k }); }))]),
        el('tbody', {}, R.paired.map(function (p) {
          return el('tr', {}, keys.map(function (k) {
            var v = p[k];
            if (Array.isArray(v)) v = '[' + v.map(function (x) { return fmt(x, 4); }).join(', ') + ']';
            else if (isNum(v)) v = Number.isInteger(v) ? String(v) : fmt(v, 4);
            return el('td', { text: v === undefined || v === null ? '–' : String(v) });
          }));
        }))
      ]));
    }
  }

  // ---------------------------------------------------------------- box plots
  function renderBoxes() {
    var b = body('boxes');
    var bx = R.boxes;
    if (!bx || !bx.methods || !bx.methods.length) {
      b.appendChild(note('No box plots: no per-case metrics (seed*/eval/*/metrics.csv) were found.'));
      return;
    }
    var wrap = el('div', { 'class': 'plots' });
    REGIONS.forEach(function (r) { wrap.appendChild(boxPanel(REGION_NAMES[r], bx.methods, bx.data[r] || {})); });
    b.appendChild(wrap);
    b.appendChild(el('p', { 'class': 'muted', text: 'Boxes: quartiles and median; whiskers: the furthest ' +
      'cases within 1.5 IQR; dots: cases beyond; ◆: mean. One value per test case and seed (the paper\'s Fig. 4).' }));
  }
  function boxPanel(title, methods, data) {
    var W = 330, H = 260, m = { l: 40, r: 10, t: 24, b: 64 };
    var pw = W - m.l - m.r, ph = H - m.t - m.b;
    var y = function (v) { return m.t + ph * (1 - Math.max(0, Math.min(1, v))); };
    var s = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'class': 'chart', role: 'img' });
    s.appendChild(svg('text', { x: m.l + pw / 2, y: 16, 'text-anchor': 'middle', 'class': 'chart-title', text: 'Dice ' + title }));
    for (var g = 0; g <= 5; g++) {
      var v = g / 5;
      s.appendChild(svg('line', { x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v), 'class': 'grid' }));
      s.appendChild(svg('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end', 'class': 'tick', text: v.toFixed(1) }));
    }
    var slot = pw / methods.length, bw = Math.min(36, slot * 0.6);
    methods.forEach(function (meth, i) {
      var d = data[meth];
      var cx = m.l + slot * (i + 0.5);
      var colour = methodColour(meth);
      var lab = svg('text', { x: cx, y: m.t + ph + 14, 'text-anchor': 'end', 'class': 'tick',
        transform: 'rotate(-35 ' + cx + ' ' + (m.t + ph + 14) + ')', text: meth });
      s.appendChild(lab);
      if (!d || !d.n) return;
      var g2 = svg('g', {}, [svg('title', { text: meth + ': median ' + fmt(d.median, 3) + ', mean ' + fmt(d.mean, 3) +
        ', quartiles ' + fmt(d.p25, 3) + '–' + fmt(d.p75, 3) + ', n = ' + d.n })]);
      g2.appendChild(svg('line', { x1: cx, x2: cx, y1: y(d.lo), y2: y(d.p25), 'class': 'whisker' }));
      g2.appendChild(svg('line', { x1: cx, x2: cx, y1: y(d.p75), y2: y(d.hi), 'class': 'whisker' }));
      g2.appendChild(svg('line', { x1: cx - bw / 4, x2: cx + bw / 4, y1: y(d.lo), y2: y(d.lo), 'class': 'whisker' }));
      g2.appendChild(svg('line', { x1: cx - bw / 4, x2: cx + bw / 4, y1: y(d.hi), y2: y(d.hi), 'class': 'whisker' }));
      g2.appendChild(svg('rect', { x: cx - bw / 2, y: y(d.p75), width: bw, height: Math.max(1, y(d.p25) - y(d.p75)),
        fill: colour, 'fill-opacity': 0.55, stroke: colour }));
      g2.appendChild(svg('line', { x1: cx - bw / 2, x2: cx + bw / 2, y1: y(d.median), y2: y(d.median), 'class': 'median-line' }));
      var my = y(d.mean);
      g2.appendChild(svg('path', { d: 'M' + cx + ' ' + (my - 4) + 'l4 4l-4 4l-4 -4z', 'class': 'mean' }));
      (d.outliers || []).forEach(function (o) {
        g2.appendChild(svg('circle', { cx: cx, cy: y(o), r: 2.5, fill: 'none', stroke: colour }));
      });
      s.appendChild(g2);
    });
    return s;
  }

  // ---------------------------------------------------------------- training curves
  function renderCurves() {
    var b = body('curves');
    var runs = (R.runs || []).filter(function (r) { return r.log && r.log.step; });
    if (!runs.length) {
      b.appendChild(note('No training curves: no log.csv was found.'));
      return;
    }
    var seeds = [];
    runs.forEach(function (r) { if (r.seed !== null && r.seed !== undefined && seeds.indexOf(r.seed) < 0) seeds.push(r.seed); });
    var style = function (r) {
      return { colour: methodColour(r.model || r.name), dash: ['', '6 3', '2 3', '8 3 2 3'][Math.max(0, seeds.indexOf(r.seed)) % 4] };
    };
    var wrap = el('div', { 'class': 'plots' });
    wrap.appendChild(lineChart('Training loss', runs, 'loss', style, false));
    wrap.appendChild(lineChart('Validation mean Dice', runs, 'val_mean_dice', style, true));
    b.appendChild(wrap);
    var legend = el('p', { 'class': 'legend' });
    runs.forEach(function (r) {
      var st = style(r);
      var sw = svg('svg', { width: 26, height: 10 }, [svg('line', { x1: 0, x2: 26, y1: 5, y2: 5, stroke: st.colour, 'stroke-width': 2, 'stroke-dasharray': st.dash })]);
      legend.appendChild(el('span', { 'class': 'legend-item' }, [sw, ' ' + r.name]));
    });
    b.appendChild(legend);
    // One line per run: what done.json says.
    var rows = runs.map(function (r) {
      var d = r.done || {};
      var val = (r.log.val_mean_dice || []).filter(isNum);
      // A run without validation records best_mean_dice -1 and best_step -1: no score to show.
      var validated = isNum(d.best_mean_dice) ? d.best_mean_dice >= 0 : val.length > 0;
      var best = isNum(d.best_mean_dice) ? d.best_mean_dice : (val.length ? Math.max.apply(null, val) : NaN);
      return el('tr', {}, [el('td', { text: r.name }), el('td', { text: d.steps !== undefined ? String(d.steps) : String(lastNum(r.log.step)) }),
        el('td', { text: validated ? fmt(best, 3) : '—' }),
        el('td', { text: validated && d.best_step !== undefined && d.best_step >= 0 ? String(d.best_step) : '—' }),
        el('td', { text: isNum(d.seconds) ? duration(d.seconds) : (isNum(lastNum(r.log.elapsed_s)) ? duration(lastNum(r.log.elapsed_s)) + ' (not finished)' : '–') })]);
    });
    b.appendChild(el('table', { 'class': 'plain' }, [
      el('thead', {}, [el('tr', {}, ['Run', 'Steps', 'Best val. Dice', 'at step', 'Time'].map(function (h) { return el('th', { text: h }); }))]),
      el('tbody', {}, rows)]));
  }
  function lastNum(a) {
    for (var i = (a || []).length - 1; i >= 0; i--) if (isNum(a[i])) return a[i];
    return NaN;
  }
  function lineChart(title, runs, key, style, unitRange) {
    var W = 480, H = 260, m = { l: 48, r: 12, t: 24, b: 36 };
    var pw = W - m.l - m.r, ph = H - m.t - m.b;
    var xmax = 0, ymin = Infinity, ymax = -Infinity, any = false;
    runs.forEach(function (r) {
      var xs = r.log.step, ys = r.log[key] || [];
      for (var i = 0; i < ys.length; i++) if (isNum(ys[i]) && isNum(xs[i])) {
        any = true; xmax = Math.max(xmax, xs[i]); ymin = Math.min(ymin, ys[i]); ymax = Math.max(ymax, ys[i]);
      }
    });
    var s = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'class': 'chart', role: 'img' });
    s.appendChild(svg('text', { x: m.l + pw / 2, y: 16, 'text-anchor': 'middle', 'class': 'chart-title', text: title }));
    if (!any) {
      s.appendChild(svg('text', { x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle', 'class': 'tick', text: 'not logged' }));
      return s;
    }
    if (unitRange) { ymin = 0; ymax = 1; } else { ymin = Math.min(0, ymin); ymax = niceCeil(ymax - ymin) + ymin; }
    xmax = niceCeil(xmax);
    var x = function (v) { return m.l + pw * v / xmax; };
    var y = function (v) { return m.t + ph * (1 - (v - ymin) / (ymax - ymin)); };
    for (var g = 0; g <= 4; g++) {
      var yv = ymin + (ymax - ymin) * g / 4, xv = xmax * g / 4;
      s.appendChild(svg('line', { x1: m.l, x2: m.l + pw, y1: y(yv), y2: y(yv), 'class': 'grid' }));
      s.appendChild(svg('text', { x: m.l - 6, y: y(yv) + 4, 'text-anchor': 'end', 'class': 'tick', text: niceNum(yv) }));
      s.appendChild(svg('text', { x: x(xv), y: m.t + ph + 16, 'text-anchor': 'middle', 'class': 'tick', text: niceNum(xv) }));
    }
    s.appendChild(svg('text', { x: m.l + pw / 2, y: H - 4, 'text-anchor': 'middle', 'class': 'tick', text: 'step' }));
    runs.forEach(function (r) {
      var xs = r.log.step, ys = r.log[key] || [], d = '', st = style(r), pts = 0;
      for (var i = 0; i < ys.length; i++) if (isNum(ys[i]) && isNum(xs[i])) {
        d += (pts++ ? 'L' : 'M') + x(xs[i]).toFixed(1) + ' ' + y(ys[i]).toFixed(1);
      }
      if (!pts) return;
      var p = svg('path', { d: d, fill: 'none', stroke: st.colour, 'stroke-width': 1.6, 'stroke-dasharray': st.dash }, [svg('title', { text: r.name })]);
      s.appendChild(p);
      if (pts === 1) s.appendChild(svg('circle', { cx: x(lastNum(xs)), cy: y(lastNum(ys)), r: 3, fill: st.colour }));
    });
    return s;
  }
  // The smallest of 1, 2, 4, 5, 8, 10 x 10^k that is >= v: axis ends with round quarters.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), steps = [1, 2, 4, 5, 8, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v * (1 - 1e-9)) return steps[i] * p;
    return 10 * p;
  }
  function niceNum(v) {
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(v % 1000 ? 1 : 0) + 'k';
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) < 0.01 ? v.toExponential(0) : v.toFixed(2);
  }
  function duration(s) {
    if (!isNum(s)) return '–';
    if (s < 90) return s.toFixed(1) + ' s';
    if (s < 5400) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(2) + ' h';
  }

  // ---------------------------------------------------------------- configuration and timing
  function renderConfig() {
    var b = body('config');
    var timing = R.timing || {};
    var stages = Object.keys(timing);
    if (stages.length || isNum(R.wall_seconds)) {
      var max = 0;
      stages.forEach(function (k) { if (isNum(timing[k])) max = Math.max(max, timing[k]); });
      var rows = stages.map(function (k) {
        var v = timing[k];
        return el('tr', {}, [el('td', { text: k }), el('td', { 'class': 'num', text: duration(v) }),
          el('td', {}, [el('span', { 'class': 'bar', style: 'width:' + (isNum(v) && max > 0 ? 160 * v / max : 0).toFixed(0) + 'px' })])]);
      });
      if (isNum(R.wall_seconds)) rows.push(el('tr', { 'class': 'total' }, [el('td', { text: 'wall clock, all stages' }), el('td', { 'class': 'num', text: duration(R.wall_seconds) }), el('td', {})]));
      b.appendChild(el('h3', { text: 'Timing' }));
      b.appendChild(el('table', { 'class': 'plain', id: 'timing-table' }, [el('tbody', {}, rows)]));
    } else {
      b.appendChild(note('No stage timing recorded (results.json "timing"); run times are in the training table above.'));
    }
    if (R.config) {
      b.appendChild(el('h3', { text: 'Configuration' }));
      b.appendChild(el('pre', { 'class': 'json', text: JSON.stringify(R.config, null, 2) }));
    } else {
      b.appendChild(note('No configuration (config.json) was found.'));
    }
    (R.runs || []).forEach(function (r) {
      if (!r.config || R.kind === 'run') return;
      b.appendChild(el('details', {}, [el('summary', { text: 'Run ' + r.name + ': config.json' }),
        el('pre', { 'class': 'json', text: JSON.stringify(r.config, null, 2) })]));
    });
  }

  // ---------------------------------------------------------------- the slice viewer
  var viewer = { cases: (R.viewer && R.viewer.cases) || [], data: {}, waiting: {}, nv: null, mode: '', token: 0 };

  // Each data/case_NNN[_modality].js calls this when it has loaded: `part` is "main" (FLAIR and
  // the label maps) or the modality it holds.
  window.kdsegCase = function (index, part, data) {
    var d = viewer.data[index] = viewer.data[index] || { volumes: {}, labels: {}, parts: {} };
    Object.assign(d.volumes, data.volumes || {});
    Object.assign(d.labels, data.labels || {});
    d.parts[part] = true;
    var key = index + '/' + part;
    (viewer.waiting[key] || []).forEach(function (f) { f(d); });
    delete viewer.waiting[key];
  };
  function loadPart(index, part) {
    var d = viewer.data[index];
    if (d && d.parts[part]) return Promise.resolve(d);
    var src = (viewer.cases[index].scripts || {})[part];
    if (!src) return Promise.reject(new Error('case ' + viewer.cases[index].id + ' has no ' + part + ' data'));
    var key = index + '/' + part;
    return new Promise(function (resolve, reject) {
      var first = !viewer.waiting[key];
      (viewer.waiting[key] = viewer.waiting[key] || []).push(resolve);
      if (!first) return;
      var s = document.createElement('script');
      s.src = src;
      s.onerror = function () { reject(new Error('cannot load ' + src)); };
      document.head.appendChild(s);
    });
  }
  function webgl2Available() {
    try { return !!document.createElement('canvas').getContext('webgl2'); } catch (e) { return false; }
  }
  function b64ToBuffer(b64) {
    var bin = atob(b64), n = bin.length, bytes = new Uint8Array(n);
    for (var i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }
  function currentCase() { return viewer.cases[Number($('case-select').value) || 0]; }
  function currentMethod() { return $('method-select').value; }

  function setStatus(text) { $('viewer-status').textContent = text; }

  function renderViewer() {
    var b = body('viewer');
    if (!viewer.cases.length) {
      $('viewer-controls').hidden = true;
      document.querySelector('#viewer .legend').hidden = true;
      $('gl-views').hidden = true;
      b.insertBefore(note('No slice viewer: no test cases with labels or predictions were found' +
        (R.kind === 'experiment' ? ' (cohort/test and seed*/pred/).' : ' (give kdseg report --cases DIR --pred DIR).') +
        ' See the notes above.'), b.firstChild);
      document.title = 'kdseg report: ready (no viewer)';
      return;
    }
    // Deep links: index.html?case=ID&image=t1ce&method=student selects them.
    var params = new URLSearchParams(window.location.search);
    viewer.cases.forEach(function (c, i) {
      $('case-select').appendChild(el('option', { value: i, text: c.id }));
      if (c.id === params.get('case')) $('case-select').value = i;
    });
    if (['flair', 't1', 't1ce', 't2'].indexOf(params.get('image')) >= 0) $('modality-select').value = params.get('image');
    fillMethods();
    var wanted = params.get('method');
    if (wanted && (currentCase().sources || []).indexOf(wanted) > 0) $('method-select').value = wanted;
    var glOk = !!window.niivue && webgl2Available();
    viewer.mode = glOk ? 'niivue' : 'static';
    document.body.setAttribute('data-viewer', viewer.mode);
    $('case-select').addEventListener('change', function () { fillMethods(); showCase(); });
    $('method-select').addEventListener('change', showCase);
    $('modality-select').addEventListener('change', showCase);
    $('static-toggle').addEventListener('change', function () { setMode(this.checked ? 'static' : 'niivue'); });
    if (!glOk) {
      $('static-toggle').checked = true;
      $('static-toggle').disabled = true;
      $('modality-select').disabled = true;
      $('opacity').disabled = true;
      $('layout-select').disabled = true;
      setMode('static');
      setStatus(window.niivue ? 'WebGL2 is not available in this browser: showing static slices (FLAIR).'
        : 'NiiVue was not bundled with this report: showing static slices (FLAIR).');
      return;
    }
    startNiivue().catch(fail);
  }
  function fillMethods() {
    var c = currentCase(), sel = $('method-select'), keep = sel.value;
    sel.innerHTML = '';
    var methods = (c.sources || []).filter(function (s) { return s !== 'reference'; });
    methods.forEach(function (m) { sel.appendChild(el('option', { value: m, text: m })); });
    if (!methods.length) sel.appendChild(el('option', { value: '', text: '(none)' }));
    if (methods.indexOf(keep) >= 0) sel.value = keep;
    else if (methods.indexOf('ensemble') >= 0) sel.value = 'ensemble';
  }
  function setMode(mode) {
    viewer.mode = mode;
    $('gl-views').hidden = mode !== 'niivue';
    $('png-views').hidden = mode !== 'static';
    showCase();
  }
  function caseDiceText(c, method) {
    var seed = R.viewer && R.viewer.seed;
    var d = R.case_dice && R.case_dice[String(seed)] && R.case_dice[String(seed)][method] && R.case_dice[String(seed)][method][c.id];
    if (!d) return '';
    return '· ' + method + ' Dice: ' + REGIONS.map(function (r) { return REGION_NAMES[r] + ' ' + fmt(d[r], 3); }).join(', ') +
      (seed !== null && seed !== undefined ? ' (seed ' + seed + ')' : '');
  }
  function showCase() {
    var c = currentCase(), method = currentMethod();
    $('case-dice').textContent = caseDiceText(c, method);
    var hasRef = (c.sources || []).indexOf('reference') >= 0;
    $('left-caption').textContent = hasRef ? 'Reference' : 'No reference labels';
    $('right-caption').textContent = method ? 'Prediction: ' + method : 'No prediction';
    if (viewer.mode === 'static') return showStatic(c, method, hasRef);
    if (viewer.nv) return showNiivue(c, method).catch(fail);
  }
  function showStatic(c, method, hasRef) {
    var box = $('png-views');
    box.innerHTML = '';
    var items = [[hasRef ? 'reference' : 'flair', hasRef ? 'Reference' : 'FLAIR']];
    if (method) items.push([method, 'Prediction: ' + method]);
    items.forEach(function (it) {
      var src = c.png && c.png[it[0]];
      if (!src) return;
      box.appendChild(el('figure', {}, [el('figcaption', { text: it[1] + ' (FLAIR; axial, coronal, sagittal; patient\'s right on the left)' }),
        el('img', { src: src, alt: c.id + ' ' + it[1] })]));
    });
    if (document.title.indexOf('kdseg report: ready') !== 0 && document.title !== 'kdseg report: error')
      document.title = 'kdseg report: ready (static slices)';
  }

  async function startNiivue() {
    var opts = { backColor: [0, 0, 0, 1], isRadiologicalConvention: true, dragAndDropEnabled: false,
      logLevel: 'error', crosshairColor: [0.3, 0.8, 1, 0.55] };
    var left = new window.niivue.Niivue(opts), right = new window.niivue.Niivue(opts);
    await left.attachToCanvas($('gl-left'));
    await right.attachToCanvas($('gl-right'));
    left.broadcastTo(right, { '2d': true, '3d': true });
    right.broadcastTo(left, { '2d': true, '3d': true });
    viewer.nv = [left, right];
    $('opacity').addEventListener('input', function () {
      var a = Number(this.value) / 100;
      viewer.nv.forEach(function (nv) { if (nv.volumes.length > 1) nv.setOpacity(1, a); });
    });
    $('layout-select').addEventListener('change', applyLayout);
    await showCase();
  }
  function applyLayout() {
    var v = $('layout-select').value;
    viewer.nv.forEach(function (nv) {
      nv.setSliceType({ multi: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial,
        coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal }[v]);
    });
  }
  async function setVolumes(nv, name, bg, labels) {
    while (nv.volumes.length) nv.removeVolume(nv.volumes[nv.volumes.length - 1]);
    var NVImage = window.niivue.NVImage;
    var img = await NVImage.new(b64ToBuffer(bg), name + '.nii.gz', 'gray', 1);
    nv.addVolume(img);
    if (labels) {
      var lab = await NVImage.new(b64ToBuffer(labels), name + '_labels.nii.gz', 'gray', Number($('opacity').value) / 100);
      lab.setColormapLabel(BRATS_LUT);
      nv.addVolume(lab);
    }
  }
  async function showNiivue(c, method) {
    var token = ++viewer.token;
    setStatus('Loading ' + c.id + '…');
    var index = Number($('case-select').value) || 0, modality = $('modality-select').value;
    var data = await loadPart(index, 'main');
    if (modality !== 'flair') data = await loadPart(index, modality);
    if (token !== viewer.token) return;  // another case was chosen meanwhile
    var bg = data.volumes[modality];
    var left = viewer.nv[0], right = viewer.nv[1];
    await setVolumes(left, c.id + '_' + modality, bg, data.labels.reference || null);
    await setVolumes(right, c.id + '_' + modality, bg, method ? data.labels[method] : null);
    if (token !== viewer.token) return;
    applyLayout();
    // Cross-hair through the tumour (the reference's centroid).
    var pos = [0, 1, 2].map(function (k) { return (c.centre[k] + 0.5) / c.dim[k]; });
    viewer.nv.forEach(function (nv) { nv.scene.crosshairPos = pos; nv.drawScene(); });
    var painted = paintedPixels(left);
    document.body.setAttribute('data-painted', String(painted));
    setStatus(c.id + ': ' + c.dim.join('×') + ' voxels of ' + c.spacing.map(function (s) { return fmt(s, 2); }).join('×') +
      ' mm · drag to move the cross-hair, scroll to change slice · radiological convention (patient\'s right on the left).');
    if (painted > 0 && document.title === 'kdseg report: loading') document.title = 'kdseg report: ready';
    else if (painted === 0) window.kdsegRecordError('the viewer drew nothing for ' + c.id);
  }
  // Pixels of the left canvas that are not background, read back right after a draw (the
  // drawing buffer is not preserved past the frame).
  function paintedPixels(nv) {
    var gl = nv.gl;
    nv.drawScene();
    var w = gl.drawingBufferWidth, h = gl.drawingBufferHeight, px = new Uint8Array(4 * w * h), n = 0;
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    for (var i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 30) n++;
    return n;
  }
  function fail(e) {
    window.kdsegRecordError('viewer: ' + (e && e.stack || e));
    setStatus('The viewer failed (' + (e && e.message || e) + '); tick "static slices" to see the PNG slices.');
  }

  // ---------------------------------------------------------------- go
  function run(name, f) {
    try { f(); } catch (e) { window.kdsegRecordError(name + ': ' + (e && e.stack || e)); }
  }
  // index.html?viewer shows the viewer alone (e.g. full screen, or a screenshot of it); with
  // &case=, &image= and &method= it opens on them.
  if (/[?&]viewer(=|&|$)/.test(window.location.search)) document.body.classList.add('viewer-only');
  run('header', renderHeader);
  run('results', renderTable);
  run('box plots', renderBoxes);
  run('curves', renderCurves);
  run('configuration', renderConfig);
  run('viewer', renderViewer);
})();
