// The two ways map.js draws its points: deck.gl (WebGL) on a GPU; on a software WebGL (no GPU:
// headless browsers, some VMs and remote desktops, where every WebGL vertex runs on the CPU and a
// million points take seconds a frame) the points are splatted into a 2-D canvas instead, which is
// many times faster there. Both draw the same scene: map.js's points, status codes, palette,
// selection and view, read through the ``scene`` object it passes.
window.mapRenderers = (function () {
  "use strict";

  function softwareWebGL() {
    const gl = document.createElement("canvas").getContext("webgl2");
    if (!gl) return true;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const name = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
    const lose = gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
    return /swiftshader|llvmpipe|softpipe|software|basic render/i.test(name);
  }

  function deckRenderer(mapEl, scene) {
    let deckgl = null, rgba = null;
    const loaded = new Promise(function (resolve, reject) {  // deck.gl's 4 MB bundle: only when used
      const script = document.createElement("script");
      script.src = "deckgl.js";
      script.onerror = function () { reject(new Error("deckgl.js could not be loaded")); };
      script.onload = function () {
        deckgl = new deck.Deck({
          parent: mapEl, views: [new deck.OrthographicView({ id: "map", flipY: false })],
          viewState: { target: [0, 0, 0], zoom: 0 }, controller: false, layers: [],
          onLoad: resolve, onError: reject });
      };
      document.head.append(script);
    });
    return {
      name: "webgl", loaded: loaded,
      colours: function () {  // RGBA per point from its status; outside a selection the points fade
        const n = scene.n, codes = scene.codes, palette = scene.palette, selectedMask = scene.selectedMask;
        rgba = new Uint8Array(4 * n);
        const alpha = selectedMask ? 30 : (n > 200000 ? 170 : 200);
        for (let i = 0; i < n; i++) {
          const c = palette[codes[i]] || palette[0], o = 4 * i;
          rgba[o] = c[0]; rgba[o + 1] = c[1]; rgba[o + 2] = c[2];
          rgba[o + 3] = selectedMask && selectedMask[i] ? 255 : alpha;
        }
      },
      draw: function () {
        const n = scene.n, view = scene.view;
        const layer = new deck.ScatterplotLayer({
          id: "points",
          data: { length: n, attributes: { getPosition: { value: scene.positions, size: 2 },
                                           getFillColor: { value: rgba, size: 4, normalized: true } } },
          radiusUnits: "pixels", getRadius: scene.radius(), stroked: false, filled: true, pickable: false });
        deckgl.setProps({ viewState: { target: [view.x, view.y, 0], zoom: view.zoom }, layers: n ? [layer] : [] });
        deckgl.redraw("map update");
      },
      pan: function () {
        deckgl.setProps({ viewState: { target: [scene.view.x, scene.view.y, 0], zoom: scene.view.zoom } });
      } };
  }

  function canvasRenderer(mapEl, scene) {
    const canvas = document.createElement("canvas"), ctx = canvas.getContext("2d");
    canvas.style.cssText = "position:absolute;inset:0;width:100%;height:100%";
    mapEl.prepend(canvas);
    let image = null, packed = null;
    function pack(c, fade) {  // little-endian RGBA as one uint32; faded = mostly the page's background
      const f = fade ? 0.8 : 0, bg = scene.background;
      const r = Math.round(c[0] + (bg[0] - c[0]) * f), g = Math.round(c[1] + (bg[1] - c[1]) * f);
      const b = Math.round(c[2] + (bg[2] - c[2]) * f);
      return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
    }
    function paint() {
      const n = scene.n, positions = scene.positions, codes = scene.codes, selectedMask = scene.selectedMask;
      const dpr = Math.min(2, window.devicePixelRatio || 1);  // sharp on high-density screens
      const w = Math.max(1, Math.round(mapEl.clientWidth * dpr)), h = Math.max(1, Math.round(mapEl.clientHeight * dpr));
      if (canvas.width !== w || canvas.height !== h || !image) {
        canvas.width = w; canvas.height = h;
        image = ctx.createImageData(w, h);
      }
      const pixels = new Uint32Array(image.data.buffer), t = scene.toScreen().map(function (v) { return v * dpr; });
      pixels.fill(0);
      const full = scene.palette.map(function (c) { return pack(c, false); });
      const faded = scene.palette.map(function (c) { return pack(c, true); });
      const s = Math.round((scene.radius() >= 3 ? 3 : 2) * dpr);  // a square of s x s pixels per point
      // unselected points first (faded when a selection exists), then the selected ones on top
      for (let pass = selectedMask ? 0 : 1; pass < 2; pass++) {
        const colours = pass === 0 ? faded : full;
        for (let i = 0; i < n; i++) {
          if (selectedMask && (selectedMask[i] === 1) !== (pass === 1)) continue;
          const x = (positions[2 * i] * t[0] + t[1]) | 0, y = (positions[2 * i + 1] * t[2] + t[3]) | 0;
          if (x < 0 || y < 0 || x > w - s || y > h - s) continue;
          const colour = colours[codes[i]] || colours[0];
          let o = y * w + x;
          for (let dy = 0; dy < s; dy++, o += w) for (let dx = 0; dx < s; dx++) pixels[o + dx] = colour;
        }
      }
      ctx.putImageData(image, 0, 0);
    }
    return { name: "canvas", loaded: Promise.resolve(), colours: function () {}, draw: paint, pan: paint };
  }

  // "auto": deck.gl unless the browser's WebGL is a software one; "webgl" / "canvas" force one
  function create(preference, mapEl, scene) {
    const useDeck = preference === "webgl" || (preference !== "canvas" && !softwareWebGL());
    return useDeck ? deckRenderer(mapEl, scene) : canvasRenderer(mapEl, scene);
  }

  return { create: create };
})();
