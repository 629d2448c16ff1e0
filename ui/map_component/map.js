// The Tune page's map: every point drawn with deck.gl (WebGL), recoloured in place on each render.
//
// What arrives, and when (see ui/map_component/__init__.py, which writes it):
//   * data/<coords_file> (gzip): float32 x, y interleaved (2 N), then int32 dataset indices (N); fetched
//     once per layout (coords_version), redrawn once when the layout changes;
//   * data/<hover_file>: the given / suggested / true labels and hover scores, laid out as
//     hover_fields says; fetched in the background once per hover_version;
//   * every render (each slider move): codes, one status byte per point, and the legend.
// A box or lasso selection goes back to Python as bytes: the 16-character coords_version, then the
// selected dataset indices as little-endian int32, ascending.
(function () {
  "use strict";
  const mapEl = document.getElementById("map"), legendEl = document.getElementById("legend");
  const noteEl = document.getElementById("note"), tipEl = document.getElementById("tip");
  const shapeEl = document.getElementById("shape"), messageEl = document.getElementById("message");
  const VERSION_BYTES = 16;
  // Inspectable from tests and benchmarks: how the last render was done and what it shows.
  const state = window.umapMap = {
    renders: 0, points: 0, draws: 0, restyles: 0, lastMs: 0, fetchMs: 0, counts: null, legend: null,
    coordsVersion: null, hoverVersion: null, hoverReady: false, selected: 0, mode: "lasso", error: null,
    marks: {} };
  function mark(name) { state.marks[name] = Math.round(performance.timeOrigin + performance.now()); }
  mark("script");

  let n = 0, positions = null, ids = null, codes = null, grid = null, bounds = null, selectedMask = null;
  let background = [255, 255, 255];  // the page's, from Streamlit's theme: faded points blend into it
  let current = null, palette = [], hover = null, hoverRequested = null, drag = null, lastHeight = 0;

  function send(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
  }

  function typed(bytes, Type) {  // bytes arrive as a Uint8Array view at any offset: copy, then view
    const copy = bytes.slice();
    return new Type(copy.buffer, 0, copy.byteLength / Type.BYTES_PER_ELEMENT);
  }

  function rgb(hex) {
    const v = parseInt(hex.slice(1), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  function message(text) {
    messageEl.textContent = text || "";
    messageEl.style.display = text ? "flex" : "none";
  }

  async function fetchBinary(name) {  // the data files are gzip files (see __init__.py: why)
    const response = await fetch("data/" + name);
    if (!response.ok) throw new Error("data/" + name + ": HTTP " + response.status);
    return new Response(response.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
  }

  // ---- the points, and a uniform grid over them for hover look-ups -------------------------------
  function loadLayout(buffer, count) {
    if (buffer.byteLength !== 12 * count) {
      throw new Error("layout file has " + buffer.byteLength + " bytes, expected " + 12 * count);
    }
    n = count;
    positions = new Float32Array(buffer, 0, 2 * n);
    ids = new Int32Array(buffer, 8 * n, n);
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let i = 0; i < 2 * n; i += 2) {
      const x = positions[i], y = positions[i + 1];
      if (x < minX) minX = x; if (x > maxX) maxX = x;
      if (y < minY) minY = y; if (y > maxY) maxY = y;
    }
    bounds = n ? { minX: minX, minY: minY, maxX: maxX, maxY: maxY } : { minX: -1, minY: -1, maxX: 1, maxY: 1 };
    grid = buildGrid();
    selectedMask = null;
    state.selected = 0;
    state.points = n;
  }

  function buildGrid() {  // counting sort of the points into side x side cells (about 4 per cell)
    const side = Math.max(1, Math.min(2048, Math.ceil(Math.sqrt(n / 4))));
    const w = (bounds.maxX - bounds.minX) || 1, h = (bounds.maxY - bounds.minY) || 1;
    const cellOf = new Uint32Array(n), start = new Uint32Array(side * side + 1);
    for (let i = 0; i < n; i++) {
      const cx = Math.min(side - 1, Math.floor((positions[2 * i] - bounds.minX) / w * side));
      const cy = Math.min(side - 1, Math.floor((positions[2 * i + 1] - bounds.minY) / h * side));
      const c = cy * side + cx;
      cellOf[i] = c;
      start[c + 1]++;
    }
    for (let c = 0; c < side * side; c++) start[c + 1] += start[c];
    const fill = start.slice(0, side * side), order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[fill[cellOf[i]]++] = i;
    return { side: side, w: w, h: h, start: start, order: order };
  }

  function nearest(x, y, radius) {  // index of the point nearest (x, y) within radius (data units), or -1
    const g = grid, side = g.side, cw = g.w / side, ch = g.h / side;
    const x0 = Math.max(0, Math.floor((x - radius - bounds.minX) / cw));
    const x1 = Math.min(side - 1, Math.floor((x + radius - bounds.minX) / cw));
    const y0 = Math.max(0, Math.floor((y - radius - bounds.minY) / ch));
    const y1 = Math.min(side - 1, Math.floor((y + radius - bounds.minY) / ch));
    let best = -1, bestD = radius * radius;
    for (let cy = y0; cy <= y1; cy++) {
      for (let cx = x0; cx <= x1; cx++) {
        const c = cy * side + cx;
        for (let k = g.start[c]; k < g.start[c + 1]; k++) {
          const i = g.order[k], dx = positions[2 * i] - x, dy = positions[2 * i + 1] - y, d = dx * dx + dy * dy;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  // ---- the view: a centre and a zoom (2^zoom pixels per data unit), y upwards -------------------
  let view = { x: 0, y: 0, zoom: 0, minZoom: -3, maxZoom: 14 };

  function size() { return [Math.max(1, mapEl.clientWidth), Math.max(1, mapEl.clientHeight)]; }

  function toScreen() {  // [sx, ox, sy, oy]: screen x = x * sx + ox, screen y = y * sy + oy
    const [w, h] = size(), scale = Math.pow(2, view.zoom);
    return [scale, w / 2 - view.x * scale, -scale, h / 2 + view.y * scale];
  }

  function toData(px, py) {
    const t = toScreen();
    return [(px - t[1]) / t[0], (py - t[3]) / t[2]];
  }

  function fitView() {
    const [w, h] = size();
    const dx = (bounds.maxX - bounds.minX) || 1, dy = (bounds.maxY - bounds.minY) || 1;
    const zoom = Math.log2(Math.min(w / (dx * 1.06), h / (dy * 1.06)));
    view = { x: (bounds.minX + bounds.maxX) / 2, y: (bounds.minY + bounds.maxY) / 2, zoom: zoom,
             minZoom: zoom - 3, maxZoom: zoom + 14 };
  }

  function zoomAt(px, py, factor) {  // zoom keeping the data point under the cursor in place
    const before = toData(px, py);
    view.zoom = Math.min(view.maxZoom, Math.max(view.minZoom, view.zoom + Math.log2(factor)));
    const after = toData(px, py);
    view.x += before[0] - after[0];
    view.y += before[1] - after[1];
  }

  function radius() { return n > 500000 ? 1.2 : n > 100000 ? 1.6 : n > 20000 ? 2.2 : 3; }

  let renderer = null;
  const scene = {  // what the renderers draw (renderers.js)
    get n() { return n; }, get positions() { return positions; }, get codes() { return codes; },
    get palette() { return palette; }, get selectedMask() { return selectedMask; }, get view() { return view; },
    get background() { return background; },
    toScreen: toScreen, radius: radius };

  function chooseRenderer(preference) {
    if (renderer) return renderer;
    renderer = window.mapRenderers.create(preference, mapEl, scene);
    state.renderer = renderer.name;
    return renderer;
  }

  function redraw(recolour) {  // draw now; resolves once the frame is painted
    if (recolour) renderer.colours();
    renderer.draw();
    return new Promise(function (resolve) { requestAnimationFrame(function () { resolve(); }); });
  }

  let panFrame = 0;
  function panLater() {  // coalesce wheel / drag moves into one draw per frame
    hideTip();
    if (panFrame) return;
    panFrame = requestAnimationFrame(function () {
      panFrame = 0;
      renderer.pan();
      state.view = Object.assign({}, view);
    });
  }

  function legend(args) {
    legendEl.textContent = "";
    const shown = [];
    args.categories.forEach(function (name, k) {
      if (!args.counts[k]) return;
      const item = document.createElement("span"), swatch = document.createElement("span");
      const text = document.createElement("span");
      item.className = "item";
      swatch.className = "swatch";
      swatch.style.background = args.palette[k];
      text.className = "legendtext";
      text.textContent = name + " (" + args.counts[k].toLocaleString("en-US") + ")";
      item.append(swatch, text);
      legendEl.append(item);
      shown.push(text.textContent);
    });
    noteEl.textContent = args.note || "";
    state.legend = shown;
  }

  // ---- hover ------------------------------------------------------------------------------------------
  async function loadHover(args) {
    const version = args.hover_version;
    state.hoverReady = false;
    hover = null;
    const buffer = await fetchBinary(args.hover_file);
    if (version !== (current && current.hover_version)) return;  // a newer one is on its way
    const views = {};
    for (const f of args.hover_fields) {
      const Type = f.dtype === "u1" ? Uint8Array : f.dtype === "u2" ? Uint16Array : Float32Array;
      views[f.name] = new Type(buffer, f.offset, f.count);
    }
    hover = views;
    state.hoverVersion = version;
    state.hoverReady = true;
  }

  function hideTip() { tipEl.style.display = "none"; }

  function escapeHtml(s) {
    const entities = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
    return String(s).replace(/[&<>"]/g, function (c) { return entities[c]; });
  }

  function tooltip(i) {
    const a = current, names = a.class_names;
    let html = "<b>#" + ids[i] + "</b> · " + escapeHtml(a.categories[codes[i]]);
    if (!hover) return html + "<br><i>loading labels…</i>";
    html += "<br>given: " + escapeHtml(names[hover.given[i]]);
    html += "<br>suggested: " + escapeHtml(names[hover.suggested[i]]);
    if (hover.true_labels) html += "<br>true: " + escapeHtml(names[hover.true_labels[i]]);
    a.score_names.forEach(function (name, s) {
      const v = hover["score" + s][i];
      html += "<br>" + escapeHtml(name) + ": " + (Number.isNaN(v) ? "–" : v.toFixed(3));
    });
    return html;
  }

  function showTip(x, y) {
    if (!n || !renderer) return hideTip();
    const p = toData(x, y), i = nearest(p[0], p[1], 7 / Math.pow(2, view.zoom));
    if (i < 0) return hideTip();
    tipEl.innerHTML = tooltip(i);
    tipEl.style.display = "block";
    const w = mapEl.clientWidth, tw = tipEl.offsetWidth, th = tipEl.offsetHeight;
    tipEl.style.left = Math.min(x + 14, w - tw - 4) + "px";
    tipEl.style.top = Math.max(4, y - th - 10) + "px";
  }

  // ---- box and lasso selection --------------------------------------------------------------------
  function setMode(mode) {
    state.mode = mode;
    for (const b of document.querySelectorAll("#tools [data-mode]")) {
      b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
    }
    mapEl.classList.toggle("select", mode !== "pan");
  }

  function local(event) {
    const r = mapEl.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  }

  function drawShape() {
    if (!drag) { shapeEl.setAttribute("d", ""); return; }
    const p = drag.points;
    if (drag.mode === "box") {
      const a = p[0], b = p[p.length - 1];
      shapeEl.setAttribute("d", "M" + a[0] + "," + a[1] + "H" + b[0] + "V" + b[1] + "H" + a[0] + "Z");
    } else {
      shapeEl.setAttribute("d", "M" + p.map(function (q) { return q[0] + "," + q[1]; }).join("L") + "Z");
    }
  }

  function inside(points, mode) {  // (N,) mask of the points inside the drawn shape, in screen pixels
    const t = toScreen(), sx = t[0], sy = t[2], o = [t[1], t[3]], mask = new Uint8Array(n);
    let count = 0;
    if (mode === "box") {
      const a = points[0], b = points[points.length - 1];
      const x0 = Math.min(a[0], b[0]), x1 = Math.max(a[0], b[0]), y0 = Math.min(a[1], b[1]), y1 = Math.max(a[1], b[1]);
      for (let i = 0; i < n; i++) {
        const x = positions[2 * i] * sx + o[0], y = positions[2 * i + 1] * sy + o[1];
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1) { mask[i] = 1; count++; }
      }
    } else {  // rasterise the lasso once, then one look-up per point
      const w = Math.max(1, mapEl.clientWidth), h = Math.max(1, mapEl.clientHeight);
      const canvas = document.createElement("canvas");
      canvas.width = w; canvas.height = h;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.beginPath();
      points.forEach(function (q, k) { if (k) ctx.lineTo(q[0], q[1]); else ctx.moveTo(q[0], q[1]); });
      ctx.closePath();
      ctx.fill();
      const alpha = ctx.getImageData(0, 0, w, h).data;
      for (let i = 0; i < n; i++) {
        const x = Math.floor(positions[2 * i] * sx + o[0]), y = Math.floor(positions[2 * i + 1] * sy + o[1]);
        if (x >= 0 && x < w && y >= 0 && y < h && alpha[4 * (y * w + x) + 3] > 127) { mask[i] = 1; count++; }
      }
    }
    return { mask: mask, count: count };
  }

  function sendSelection() {
    const count = state.selected, out = new Uint8Array(VERSION_BYTES + 4 * count);
    const version = state.coordsVersion || "";
    for (let k = 0; k < VERSION_BYTES; k++) out[k] = version.charCodeAt(k) || 0;
    const chosen = new Int32Array(out.buffer, VERSION_BYTES, count);
    if (selectedMask) {
      let j = 0;
      for (let i = 0; i < n; i++) if (selectedMask[i]) chosen[j++] = ids[i];
      chosen.sort();
    }
    send("streamlit:setComponentValue", { value: out, dataType: "bytes" });
  }

  function select(points, mode) {
    const result = inside(points, mode);
    selectedMask = result.count ? result.mask : null;
    state.selected = result.count;
    sendSelection();
    return redraw(true);
  }

  function clearSelection() {
    if (!selectedMask && !state.selected) return;
    selectedMask = null;
    state.selected = 0;
    sendSelection();
    redraw(true);
  }

  mapEl.addEventListener("pointerdown", function (event) {
    if (event.button !== 0 || !n || !renderer) return;
    drag = { mode: state.mode, points: [local(event)] };
    mapEl.setPointerCapture(event.pointerId);
    hideTip();
    event.preventDefault();
  });
  mapEl.addEventListener("pointermove", function (event) {
    const p = local(event);
    if (!drag) return showTip(p[0], p[1]);
    const last = drag.points[drag.points.length - 1];
    if (drag.mode === "pan") {
      const scale = Math.pow(2, view.zoom);
      view.x -= (p[0] - last[0]) / scale;
      view.y += (p[1] - last[1]) / scale;
      drag.points[0] = p;
      return panLater();
    }
    if (Math.abs(p[0] - last[0]) + Math.abs(p[1] - last[1]) < 2) return;
    if (drag.mode === "box") drag.points[1] = p; else drag.points.push(p);
    drawShape();
  });
  mapEl.addEventListener("pointerup", function () {
    if (!drag) return;
    const done = drag;
    drag = null;
    drawShape();
    if (done.mode === "pan") return;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;  // a click is not a selection
    for (const q of done.points) {
      x0 = Math.min(x0, q[0]); x1 = Math.max(x1, q[0]); y0 = Math.min(y0, q[1]); y1 = Math.max(y1, q[1]);
    }
    if (done.points.length >= 2 && x1 - x0 + y1 - y0 >= 4) select(done.points, done.mode);
  });
  mapEl.addEventListener("wheel", function (event) {
    if (!n || !renderer) return;
    event.preventDefault();
    const p = local(event);
    zoomAt(p[0], p[1], Math.pow(2, -event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.002)));
    panLater();
  }, { passive: false });
  mapEl.addEventListener("pointerleave", hideTip);
  mapEl.addEventListener("dblclick", clearSelection);
  for (const b of document.querySelectorAll("#tools [data-mode]")) {
    b.addEventListener("click", function () { setMode(b.dataset.mode); });
  }
  document.getElementById("clear").addEventListener("click", clearSelection);
  document.getElementById("fit").addEventListener("click", function () {
    if (!n || !renderer) return;
    fitView();
    panLater();
  });

  // ---- one render per Streamlit run ---------------------------------------------------------------
  function resize(args) {
    const bar = document.getElementById("bar").offsetHeight + noteEl.offsetHeight;
    mapEl.style.height = Math.max(200, args.height - bar) + "px";
    if (args.height !== lastHeight) {
      lastHeight = args.height;
      send("streamlit:setFrameHeight", { height: args.height });
    }
  }

  async function render(args, theme) {
    const started = performance.now();
    if (!state.renders) mark("args");
    current = args;
    if (theme && theme.textColor) document.body.style.color = theme.textColor;
    if (theme && /^#[0-9a-f]{6}$/i.test(theme.backgroundColor || "")) background = rgb(theme.backgroundColor);
    legend(args);
    resize(args);
    chooseRenderer(args.renderer);
    await renderer.loaded;
    const fresh = args.coords_version !== state.coordsVersion;
    if (fresh) {
      message(args.points ? "Loading " + args.points.toLocaleString("en-US") + " points…" : "");
      const fetched = performance.now();
      const buffer = args.points ? await fetchBinary(args.coords_file) : new ArrayBuffer(0);
      state.fetchMs = performance.now() - fetched;
      mark("fetched");
      loadLayout(buffer, args.points);
      state.coordsVersion = args.coords_version;
    }
    codes = typed(args.codes, Uint8Array);
    if (codes.length !== n) throw new Error("got " + codes.length + " status codes for " + n + " points");
    palette = args.palette.map(rgb);
    if (fresh && n) fitView();
    await redraw(true);
    state.view = Object.assign({}, view);
    message(n ? "" : "No points to draw.");
    if (fresh) mark("drawn");
    if (args.hover_version !== hoverRequested) {  // after the points are on screen
      hoverRequested = args.hover_version;
      loadHover(args).catch(function (err) { state.error = "hover data: " + err; hoverRequested = null; });
    }
    if (fresh) state.draws++; else state.restyles++;
    state.counts = args.counts;
    state.renders++;
    state.lastMs = performance.now() - started;
  }

  let pending = null, busy = false;  // renders arriving while one draws: only the newest is drawn
  function next() {
    if (busy || !pending) return;
    const job = pending;
    pending = null;
    busy = true;
    render(job.args, job.theme).catch(function (err) {
      state.error = String(err && err.stack || err);
      message("The map failed to draw: " + err);
    }).then(function () { busy = false; next(); });
  }
  window.addEventListener("message", function (event) {
    const data = event.data;
    if (!data || data.type !== "streamlit:render") return;
    pending = { args: data.args, theme: data.theme };
    next();
  });
  setMode("lasso");
  send("streamlit:componentReady", { apiVersion: 1 });
})();
