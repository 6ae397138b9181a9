// sparsecircuits circuit viewer: one hand-written ES module, no dependencies.
//
// The same code runs as the anywidget front end (`CircuitViewer`) and inside the standalone page
// (`export_html`), where a small model shim stands in for the widget model. It reads the binary
// bundle of `sparsecircuits.viewer.bundle` (see that module for the format), and draws the graph
// on a canvas; scrubbing, thresholds, hover and selection all happen here. Only `ablate` asks
// Python (a custom message), and only where the model says `can_ablate`.
//
// Below the graph, "time in the weights": the PCA path of the weights (or masks) through the
// checkpoints, a checkpoint x checkpoint similarity matrix and the weights that oscillate with the
// cycle, highlighted on the graph (the numbers of `sparsecircuits analyze`, carried by the bundle;
// drawn like the figures of `sparsecircuits.figures.trajectory_plots`).
//
// A small API for tests and benchmarks: the root element carries data-step-index,
// data-edges-drawn, data-dying-drawn, data-nodes-drawn, data-oscillating-drawn, data-time (1 when
// the bundle has time analyses), data-time-step (the checkpoint the time panel marks),
// data-frame-ms and data-ready; and `root.scv` (also `window.scv`, the last viewer made) has
// setStep(i), set(state), state(), nodePoint(id) and pathPoint(t).

// Okabe & Ito's colour-blind-safe palette: blue and vermillion for the sign of a weight, the
// other six for tasks and sources (then blue and vermillion again beyond six)
const TASK_COLORS = ["#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#000000", "#F0E442", "#0072B2",
  "#D55E00"];
const SIGN_COLORS = ["#0072B2", "#D55E00"]; // positive, negative
// residual (norm gain) and qk (fixed 1/sqrt(d_head)) edges carry no learned weight matrix entry
const STRUCTURAL_COLOR = "#a8a8a8";
const STATUS = ["persistent", "born", "revived", "dying"];
const STATUS_COLORS = ["#9a9a9a", "#009E73", "#0072B2", "#D55E00"];
const WARMUP_COLOR = "#d9d9d9";
// the figures' colours (sparsecircuits/figures/style.py): NEUTRAL grey for the warm-up and the
// path's line; the highlight of the oscillating weights is Okabe & Ito's reddish purple
const NEUTRAL = "#7F7F7F";
const OSCILLATING_COLOR = "#CC79A7";
const BUNDLE_VERSION = 2;
// px, by |weight| bucket: below the reference weight (the 95th percentile of |w|) the
// strokes are at most 1 px, which Chromium draws as fast hairlines; above it 1.7 and 2.6 px
const WIDTHS = [0.35, 0.55, 0.8, 1.0, 1.7, 2.6];
const SIDE_WIDTH = 360;
const SCRUB_MS = 250;
const SETTLE_MS = 150;
const CACHE_BYTES = 160e6; // pre-rendered edge layers kept (about 60 checkpoints at 1100 x 600)
const GRAPH_HEIGHT = 600;
const PATH_WIDTH = 440;
const MATRIX_WIDTH = 400;
const TIME_HEIGHT = 330;
// the similarity matrices as the figures title them
const MATRIX_TITLES = { from_start: "cosine of displacement from start",
  from_previous: "cosine of step from previous", jaccard: "Jaccard of alive sets" };

const CSS = `
.scv { font: 12px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
  background: #fff; padding: 8px; box-sizing: border-box; outline: none; min-width: 760px; }
.scv * { box-sizing: border-box; }
.scv-title { font-size: 14px; margin: 0 0 6px 0; display: flex; gap: 14px; flex-wrap: wrap;
  align-items: baseline; }
.scv-title b { font-weight: 600; }
.scv-main { display: flex; gap: 10px; align-items: flex-start; }
.scv-graph { position: relative; flex: 1 1 auto; min-width: 380px; border: 1px solid #e3e3e3; }
.scv-graph canvas { display: block; position: absolute; left: 0; top: 0; }
.scv-side { flex: 0 0 ${SIDE_WIDTH}px; width: ${SIDE_WIDTH}px; display: flex; flex-direction: column;
  gap: 6px; }
.scv-side canvas { display: block; border: 1px solid #e3e3e3; }
.scv-info { border: 1px solid #e3e3e3; padding: 6px; min-height: 60px; max-height: 220px;
  overflow: auto; }
.scv-info table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
.scv-info td, .scv-info th { padding: 1px 4px; text-align: right; white-space: nowrap; }
.scv-info td:first-child, .scv-info th:first-child { text-align: left; }
.scv-tip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.96);
  border: 1px solid #888; padding: 5px 7px; font-size: 11.5px; display: none; z-index: 5;
  max-width: 360px; box-shadow: 0 1px 4px rgba(0,0,0,0.2); }
.scv-tip code { font-size: 11px; }
.scv-controls { display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center;
  margin-top: 8px; }
.scv-controls label { display: inline-flex; gap: 4px; align-items: center; white-space: nowrap; }
.scv-scrub { margin-top: 8px; display: flex; gap: 8px; align-items: flex-start; }
.scv-scrub button { width: 34px; height: 26px; font-size: 14px; cursor: pointer; }
.scv-slider { flex: 1 1 auto; }
.scv-slider input[type=range] { width: 100%; margin: 0; }
.scv-strip { display: block; width: 100%; height: 34px; cursor: pointer; }
.scv-legend { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; }
.scv-chip { display: inline-block; width: 14px; height: 10px; border-radius: 2px;
  vertical-align: middle; margin-right: 3px; }
.scv button.scv-ablate { padding: 2px 8px; }
.scv-muted { color: #666; }
.scv-time { margin-top: 10px; border-top: 1px solid #e3e3e3; padding-top: 6px; }
.scv-time-head { display: flex; flex-wrap: wrap; gap: 4px 16px; align-items: center; }
.scv-time-head label { display: inline-flex; gap: 4px; align-items: center; white-space: nowrap; }
.scv-time-body { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 6px; }
.scv-stack { position: relative; border: 1px solid #e3e3e3; }
.scv-stack canvas { display: block; position: absolute; left: 0; top: 0; }
.scv-time-note { border: 1px solid #e3e3e3; padding: 8px; color: #666; flex: 0 1 420px; }
.scv-time-summary { color: #222; display: flex; flex-direction: column; gap: 6px; }
`;

// --- the bundle ---------------------------------------------------------------------------

const F16 = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 31;
    const f = h & 1023;
    table[h] = e === 0 ? sign * f * 2 ** -24
      : e === 31 ? (f ? NaN : sign * Infinity) : sign * (1 + f / 1024) * 2 ** (e - 15);
  }
  return table;
})();

const TYPED = { u1: Uint8Array, u2: Uint16Array, u4: Uint32Array, f2: Uint16Array,
  f4: Float32Array };

export function parseBundle(source) {
  // source: ArrayBuffer, a typed array or a DataView (what ipywidgets hands over)
  let bytes = source instanceof ArrayBuffer ? new Uint8Array(source)
    : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  if (bytes.byteOffset % 8 !== 0) bytes = bytes.slice(); // typed views need alignment
  const buffer = bytes.buffer;
  const base = bytes.byteOffset;
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== "SCVB") throw new Error("not a sparsecircuits viewer bundle");
  const view = new DataView(buffer, base, bytes.byteLength);
  const version = view.getUint32(4, true);
  if (version !== BUNDLE_VERSION) {
    throw new Error(`bundle version ${version}; this viewer reads version ${BUNDLE_VERSION}`);
  }
  const length = view.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length)));
  const start = base + 12 + length;
  const arrays = {};
  for (const [name, spec] of Object.entries(header.arrays)) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    arrays[name] = new TYPED[spec.dtype](buffer, start + spec.offset, count);
  }
  return new Timeline(header, arrays);
}

class Timeline {
  constructor(header, arrays) {
    this.h = header;
    this.a = arrays;
    this.N = header.counts.nodes;
    this.E = header.counts.edges;
    this.T = header.counts.checkpoints;
    this.strideE = (this.E + 7) >> 3;
    this.strideN = (this.N + 7) >> 3;
    const counts = header.checkpoints.edge_counts;
    this.weightOffset = new Float64Array(this.T + 1);
    for (let t = 0; t < this.T; t++) this.weightOffset[t + 1] = this.weightOffset[t] + counts[t];
    this.rows = new Array(this.T);
    this.tasks = header.tasks.map((task) => ({ ...task, nodes: new Array(this.T) }));
    this.taskIndex = Object.fromEntries(this.tasks.map((task, i) => [task.name, i]));
    this.sites = header.sites;
    this.kinds = header.kinds;
    this.kindQK = header.kinds.indexOf("qk");
    this.kindResidual = header.kinds.indexOf("residual");
    this._firstSeen = null;
    this._nodeIds = null;
  }

  nodeId(i) {
    return `${this.sites[this.a.node_site[i]]}:${this.a.node_channel[i]}`;
  }

  present(e, t) {
    return (this.a.edge_present[t * this.strideE + (e >> 3)] >> (e & 7)) & 1;
  }

  // the present edges of checkpoint t: {idx: Uint32Array, w: Float32Array}, edge order
  row(t) {
    if (this.rows[t]) return this.rows[t];
    const n = this.h.checkpoints.edge_counts[t];
    const idx = new Uint32Array(n);
    const w = new Float32Array(n);
    const bits = this.a.edge_present;
    const weights = this.a.edge_weight;
    const base = t * this.strideE;
    let k = 0;
    const offset = this.weightOffset[t];
    for (let b = 0; b < this.strideE; b++) {
      let byte = bits[base + b];
      while (byte) {
        const low = byte & -byte;
        idx[k] = (b << 3) + (31 - Math.clz32(low));
        w[k] = F16[weights[offset + k]];
        k++;
        byte ^= low;
      }
    }
    this.rows[t] = { idx, w };
    return this.rows[t];
  }

  weight(e, t) {
    if (!this.present(e, t)) return NaN;
    const { idx, w } = this.row(t);
    let lo = 0;
    let hi = idx.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (idx[mid] === e) return w[mid];
      if (idx[mid] < e) lo = mid + 1; else hi = mid - 1;
    }
    return NaN;
  }

  // first checkpoint where each edge is present
  firstSeen() {
    if (this._firstSeen) return this._firstSeen;
    const first = new Int32Array(this.E).fill(this.T);
    for (let t = this.T - 1; t >= 0; t--) {
      const { idx } = this.row(t);
      for (let k = 0; k < idx.length; k++) first[idx[k]] = t;
    }
    this._firstSeen = first;
    return first;
  }

  // circuit of task i at t: {member: Uint8Array(N), importance: Float32Array(N)}
  circuit(i, t) {
    const task = this.tasks[i];
    if (task.nodes[t]) return task.nodes[t];
    const bits = this.a[`circuit_nodes.${task.name}`];
    const values = this.a[`circuit_importance.${task.name}`];
    let offset = 0;
    for (let s = 0; s < t; s++) {
      for (let b = 0; b < this.strideN; b++) offset += popcount(bits[s * this.strideN + b]);
    }
    const member = new Uint8Array(this.N);
    const importance = new Float32Array(this.N).fill(NaN);
    let k = 0;
    for (let b = 0; b < this.strideN; b++) {
      let byte = bits[t * this.strideN + b];
      while (byte) {
        const low = byte & -byte;
        const node = (b << 3) + (31 - Math.clz32(low));
        member[node] = 1;
        importance[node] = F16[values[offset + k]];
        k++;
        byte ^= low;
      }
    }
    task.nodes[t] = { member, importance, size: k };
    return task.nodes[t];
  }

  circuitHasEdge(i, e, t, member) {
    const explicit = this.a[`circuit_edges.${this.tasks[i].name}`];
    if (explicit) return (explicit[t * this.strideE + (e >> 3)] >> (e & 7)) & 1;
    return member[this.a.edge_source[e]] && member[this.a.edge_target[e]];
  }

  // [start, end] checkpoint runs where edge e is present
  spells(e) {
    const out = [];
    let start = -1;
    for (let t = 0; t <= this.T; t++) {
      const on = t < this.T && this.present(e, t);
      if (on && start < 0) start = t;
      if (!on && start >= 0) { out.push([start, t - 1]); start = -1; }
    }
    return out;
  }
}

// about four round numbers between lo and hi
function niceTicks(lo, hi) {
  const span = hi - lo;
  if (!(span > 0)) return [];
  const raw = span / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) {
    out.push(Math.abs(v) < 1e-12 * span ? 0 : v);
  }
  return out;
}

function popcount(byte) {
  let c = 0;
  while (byte) { byte &= byte - 1; c++; }
  return c;
}

// --- small helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") el.style.cssText = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const child of children) el.append(child);
  return el;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(2);
  return x.toFixed(digits);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;" })[c]);
}

function setupCanvas(canvas, width, height, options = {}) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d", options);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

// matplotlib's colour maps of the figures, 11 stops each (sampled at 0, 0.1, ..., 1; a test
// checks them): viridis (loss, position in the cycle), RdBu_r (cosines), cividis (Jaccard)
const VIRIDIS = [[68, 1, 84], [72, 36, 117], [65, 68, 135], [53, 95, 141], [42, 120, 142],
  [33, 145, 140], [34, 168, 132], [68, 191, 112], [122, 209, 81], [189, 223, 38], [253, 231, 37]];
const RDBU_R = [[5, 48, 97], [32, 101, 171], [67, 147, 195], [144, 196, 221], [209, 229, 240],
  [247, 246, 246], [253, 219, 199], [243, 164, 129], [214, 96, 77], [177, 24, 43], [103, 0, 31]];
const CIVIDIS = [[0, 34, 78], [8, 51, 112], [53, 69, 108], [79, 87, 108], [102, 105, 112],
  [125, 124, 120], [148, 142, 119], [174, 163, 113], [200, 184, 102], [229, 207, 82],
  [254, 232, 56]];
function ramp(stops, x) {
  const v = Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(v));
  const f = v - i;
  const c = stops[i].map((a, j) => Math.round(a + f * (stops[i + 1][j] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const viridis = (x) => ramp(VIRIDIS, x);

// --- the viewer ---------------------------------------------------------------------------

function render({ model, el }) {
  const data = parseBundle(model.get("bundle"));
  const viewer = new Viewer(model, el, data);
  return () => viewer.destroy();
}

class Viewer {
  constructor(model, el, data) {
    this.model = model;
    this.el = el;
    this.d = data;
    this.hover = null;
    this.playing = null;
    this.lastAblation = null;
    this.frames = [];
    this.cache = new Map();
    this.warmTimer = null;
    this.sourceColor = this.makeSourceColors();
    this.weightRef = this.referenceWeight();
    this.build();
    this.listeners = [];
    for (const name of ["step_index", "threshold", "view", "tasks", "color_by", "selected",
      "prerender", "oscillating"]) {
      const cb = () => this.draw();
      model.on(`change:${name}`, cb);
      this.listeners.push([`change:${name}`, cb]);
    }
    const onMsg = (msg) => this.onMessage(msg);
    model.on("msg:custom", onMsg);
    this.listeners.push(["msg:custom", onMsg]);
    this.resize();
    if (typeof ResizeObserver !== "undefined") {
      this.observer = new ResizeObserver(() => this.resize());
      this.observer.observe(this.root);
    }
    this.root.scv = {
      setStep: (i) => this.setStep(i),
      set: (state) => this.setState(state),
      state: () => this.stateSnapshot(),
      frames: this.frames,
      timeline: this.d,
      flush: () => this.flush(),
      whenWarm: () => this.whenWarm(),
      clearCache: () => this.cache.clear(),
      // client coordinates of a node, for tests that hover and click it
      nodePoint: (id) => {
        const i = this.nodeIndex().get(id);
        const r = this.canvas.getBoundingClientRect();
        return i === undefined ? null : { x: r.left + this.sx[i], y: r.top + this.sy[i] };
      },
      // client coordinates of checkpoint t on the time panel's path (null without one)
      pathPoint: (t) => {
        if (!this.pathXY || !(t >= 0 && t < this.d.T)) return null;
        const r = this.pathCanvas.getBoundingClientRect();
        return { x: r.left + this.pathXY[2 * t], y: r.top + this.pathXY[2 * t + 1] };
      },
    };
    window.scv = this.root.scv;
    this.root.dataset.readyMs = performance.now().toFixed(1); // since navigation start
    this.root.dataset.ready = "1";
  }

  destroy() {
    this.stop();
    if (this.warmTimer) clearTimeout(this.warmTimer);
    clearTimeout(this.settleTimer);
    this.cache.clear();
    if (this.observer) this.observer.disconnect();
    for (const [name, cb] of this.listeners) this.model.off?.(name, cb);
  }

  get step() { return Math.max(0, Math.min(this.d.T - 1, this.model.get("step_index") | 0)); }
  get threshold() { return +this.model.get("threshold") || 0; }
  get view() { return this.model.get("view") || "weights"; }
  get colorBy() { return this.model.get("color_by") || "sign"; }
  get selectedTasks() {
    const names = this.model.get("tasks") || [];
    return names.map((n) => this.d.taskIndex[n]).filter((i) => i !== undefined);
  }
  get selectedNodes() {
    const ids = this.model.get("selected") || [];
    const index = this.nodeIndex();
    return ids.map((id) => index.get(id)).filter((i) => i !== undefined);
  }

  nodeIndex() {
    if (!this._nodeIndex) {
      this._nodeIndex = new Map();
      for (let i = 0; i < this.d.N; i++) this._nodeIndex.set(this.d.nodeId(i), i);
    }
    return this._nodeIndex;
  }

  set(name, value) {
    this.model.set(name, value);
    this.model.save_changes();
  }

  setStep(i) {
    this.set("step_index", Math.max(0, Math.min(this.d.T - 1, i | 0)));
    return this.stateSnapshot();
  }

  setState(state) {
    for (const [k, v] of Object.entries(state)) this.model.set(k, v);
    this.model.save_changes();
    return this.stateSnapshot();
  }

  stateSnapshot() {
    const ds = this.root.dataset;
    return { step_index: this.step, edges_drawn: +ds.edgesDrawn, dying_drawn: +ds.dyingDrawn,
      nodes_drawn: +ds.nodesDrawn, frame_ms: +ds.frameMs };
  }

  makeSourceColors() {
    const names = [...this.d.tasks.map((t) => t.name), ...(this.d.h.loss?.sources ?? []),
      ...this.d.h.checkpoints.sources];
    const colors = new Map();
    for (const name of names) {
      if (!colors.has(name)) colors.set(name, TASK_COLORS[colors.size % TASK_COLORS.length]);
    }
    return colors;
  }

  referenceWeight() {
    // the 95th percentile of |w| over a sample of the weight edges (not residual gains, not qk)
    const { edge_weight: w, edge_kind: kind } = this.d.a;
    const sample = [];
    const step = Math.max(1, Math.floor(w.length / 20000));
    const row = this.d.row(this.d.T - 1);
    for (let k = 0; k < row.idx.length; k += Math.max(1, Math.floor(row.idx.length / 5000))) {
      const kd = kind[row.idx[k]];
      if (kd !== this.d.kindQK && kd !== this.d.kindResidual) sample.push(Math.abs(row.w[k]));
    }
    for (let k = 0; k < w.length && sample.length < 30000; k += step) {
      const v = Math.abs(F16[w[k]]);
      if (Number.isFinite(v)) sample.push(v);
    }
    sample.sort((a, b) => a - b);
    this.maxWeight = sample.length ? sample[sample.length - 1] : 1;
    return sample.length ? sample[Math.floor(0.95 * (sample.length - 1))] || 1 : 1;
  }

  // -- DOM ---------------------------------------------------------------------------------

  build() {
    const d = this.d;
    this.el.replaceChildren();
    const style = h("style");
    style.textContent = CSS;
    this.title = h("div", { class: "scv-title" });
    // three layers: bands and labels (drawn on resize), edges, nodes and text
    this.backCanvas = h("canvas", { class: "scv-back" });
    this.edgeCanvas = h("canvas", { class: "scv-edges" });
    this.canvas = h("canvas", { class: "scv-canvas" });
    this.tip = h("div", { class: "scv-tip" });
    this.graphBox = h("div", { class: "scv-graph" }, this.backCanvas, this.edgeCanvas,
      this.canvas, this.tip);
    this.matrixCanvas = h("canvas", { class: "scv-matrix" });
    this.curvesCanvas = h("canvas", { class: "scv-curves" });
    this.info = h("div", { class: "scv-info" });
    const side = h("div", { class: "scv-side" }, this.matrixCanvas, this.curvesCanvas, this.info);

    this.playButton = h("button", { title: "play / pause (space)", onclick: () => this.toggle() },
      "▶");
    this.slider = h("input", { type: "range", min: "0", max: String(d.T - 1), step: "1",
      value: "0", "aria-label": "checkpoint" });
    this.slider.addEventListener("input", () => this.set("step_index", +this.slider.value));
    this.strip = h("canvas", { class: "scv-strip" });
    const stripPick = (ev) => {
      const r = this.strip.getBoundingClientRect();
      const t = Math.floor(((ev.clientX - r.left - 8) / (r.width - 16)) * d.T);
      this.set("step_index", Math.max(0, Math.min(d.T - 1, t)));
    };
    this.strip.addEventListener("mousedown", (ev) => {
      stripPick(ev);
      const move = (e) => stripPick(e);
      const up = () => { window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up); };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    });
    this.sourceLegend = h("div", { class: "scv-legend" });
    const scrub = h("div", { class: "scv-scrub" }, this.playButton,
      h("div", { class: "scv-slider" }, this.slider, this.strip, this.sourceLegend));

    // controls
    this.viewSelect = h("select", { "aria-label": "graph" },
      h("option", { value: "weights" }, "whole weight graph"),
      h("option", { value: "circuits" }, "task circuits"));
    this.viewSelect.addEventListener("change", () => {
      if (this.viewSelect.value === "circuits" && !(this.model.get("tasks") || []).length
          && d.tasks.length) this.model.set("tasks", [d.tasks[0].name]);
      this.set("view", this.viewSelect.value);
    });
    this.taskBoxes = h("span", { class: "scv-legend" });
    for (const task of d.tasks) {
      const box = h("input", { type: "checkbox", value: task.name });
      box.addEventListener("change", () => {
        const chosen = [...this.taskBoxes.querySelectorAll("input")].filter((b) => b.checked)
          .map((b) => b.value);
        this.model.set("tasks", chosen);
        if (chosen.length) this.model.set("view", "circuits");
        this.model.save_changes();
      });
      this.taskBoxes.append(h("label", {}, box,
        h("span", { class: "scv-chip", style: `background:${this.sourceColor.get(task.name)}` }),
        task.name));
    }
    this.colorSelect = h("select", { "aria-label": "edge colour" },
      h("option", { value: "sign" }, "sign of the weight"),
      h("option", { value: "status" }, "change since the previous checkpoint"));
    this.colorSelect.addEventListener("change", () => this.set("color_by", this.colorSelect.value));
    this.thresholdInput = h("input", { type: "range", min: "0", max: "1000", step: "1",
      value: "0", style: "width:140px", "aria-label": "|weight| threshold" });
    this.thresholdText = h("span", { style: "min-width:52px;display:inline-block" });
    this.thresholdInput.addEventListener("input", () => {
      const x = +this.thresholdInput.value / 1000;
      this.set("threshold", x * x * this.maxWeight); // quadratic: fine control near 0
    });
    this.edgeLegend = h("span", { class: "scv-legend" });
    const controls = h("div", { class: "scv-controls" },
      h("label", {}, "show ", this.viewSelect), this.taskBoxes,
      h("label", {}, "colour by ", this.colorSelect),
      h("label", {}, "|w| ≥ ", this.thresholdInput, this.thresholdText),
      this.edgeLegend);

    this.root = h("div", { class: "scv", tabindex: "0" }, style, this.title,
      h("div", { class: "scv-main" }, this.graphBox, side), scrub, controls, this.buildTime());
    this.root.dataset.time = this.time.missing ? "0" : "1";
    this.el.append(this.root);

    this.root.addEventListener("keydown", (ev) => {
      if (ev.target.tagName === "SELECT") return;
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        ev.preventDefault();
        this.set("step_index", (this.step + (ev.key === "ArrowRight" ? 1 : d.T - 1)) % d.T);
      } else if (ev.key === " ") {
        ev.preventDefault();
        this.toggle();
      } else if (ev.key === "Escape") {
        this.set("selected", []);
      }
    });
    this.canvas.addEventListener("mousemove", (ev) => this.onHover(ev));
    this.canvas.addEventListener("mouseleave", () => { this.tip.style.display = "none"; });
    this.canvas.addEventListener("click", (ev) => this.onClick(ev));
  }

  toggle() {
    if (this.playing) this.stop();
    else {
      this.playButton.textContent = "❚❚";
      this.playing = setInterval(() => this.set("step_index", (this.step + 1) % this.d.T), 450);
    }
  }

  stop() {
    if (this.playing) clearInterval(this.playing);
    this.playing = null;
    if (this.playButton) this.playButton.textContent = "▶";
  }

  resize() {
    const total = Math.max(760, this.root.clientWidth || 1100) - 16;
    const width = Math.max(380, total - SIDE_WIDTH - 12);
    if (width === this.width) return;
    this.width = width;
    this.height = GRAPH_HEIGHT;
    this.graphBox.style.width = `${width + 2}px`;
    this.graphBox.style.height = `${this.height + 2}px`;
    this.ctx = setupCanvas(this.canvas, width, this.height);
    this.backCtx = setupCanvas(this.backCanvas, width, this.height);
    this.edgeCtx = setupCanvas(this.edgeCanvas, width, this.height);
    this.placeNodes();
    this.backCtx.fillStyle = "#fff";
    this.backCtx.fillRect(0, 0, width, this.height);
    this.drawBands(this.backCtx);
    this.drawSide();
    this.draw();
  }

  placeNodes() {
    const d = this.d;
    const ctx = this.ctx;
    ctx.font = "11px system-ui, sans-serif";
    let gutter = 0;
    for (const band of d.h.bands) gutter = Math.max(gutter, ctx.measureText(band.label).width);
    this.gutter = Math.min(gutter + 14, this.width * 0.42);
    const top = 30;
    const bottom = 18;
    const right = 12;
    const nb = d.h.bands.length;
    const plotW = this.width - this.gutter - right;
    this.bandY = (y) => top + ((nb - 1 - y) / Math.max(1, nb - 1)) * (this.height - top - bottom);
    this.bandGap = (this.height - top - bottom) / Math.max(1, nb - 1);
    this.px = (x) => this.gutter + x * plotW;
    this.sx = new Float32Array(d.N);
    this.sy = new Float32Array(d.N);
    const { node_x: nx, node_y: ny } = d.a;
    for (let i = 0; i < d.N; i++) { this.sx[i] = this.px(nx[i]); this.sy[i] = this.bandY(ny[i]); }
    // per band, node indices sorted by x (for hover)
    this.bandNodes = new Map();
    for (let i = 0; i < d.N; i++) {
      const y = ny[i];
      if (!this.bandNodes.has(y)) this.bandNodes.set(y, []);
      this.bandNodes.get(y).push(i);
    }
    for (const list of this.bandNodes.values()) list.sort((a, b) => nx[a] - nx[b]);
  }

  // -- the graph -----------------------------------------------------------------------------

  // the edge layer's look depends on these (and on the size)
  frameKey(t) {
    const tasks = this.view === "circuits" ? (this.model.get("tasks") || []).join(",") : "";
    return [t, this.view, tasks, this.colorBy, this.threshold,
      (this.model.get("selected") || []).join(","), this.width].join("|");
  }

  // Draw checkpoint t. With `target` (a 2D context), only its edges, into it (a pre-render).
  // A frame not in the cache that follows another within SCRUB_MS (the slider is moving, or
  // playing) draws its edges at half resolution, which halves the rasterisation (the cost of
  // a frame: it grows with the edges' length in pixels); SETTLE_MS after the last one the
  // frame is drawn again in full (`full`) and cached.
  draw(t = this.step, target = null, full = false) {
    if (!this.ctx) return;
    const t0 = performance.now();
    const since = t0 - (this.lastDraw || -1e9);
    const d = this.d;
    const ctx = this.ctx;
    const key = this.frameKey(t);
    const cached = target ? null : this.cache.get(key);
    const threshold = this.threshold;
    const circuits = this.view === "circuits" ? this.selectedTasks : [];
    const inCircuitView = this.view === "circuits";
    const status = this.colorBy === "status";
    const multi = circuits.length > 1;
    const selected = this.selectedNodes;
    const pinned = new Uint8Array(d.N);
    for (const i of selected) pinned[i] = 1;
    const anyPinned = selected.length > 0;

    // circuit membership at t: bit k for the k-th chosen circuit
    let member = null;
    const members = circuits.map((i) => d.circuit(i, t));
    if (inCircuitView) {
      member = new Uint8Array(d.N);
      members.forEach((c, k) => { for (let i = 0; i < d.N; i++) if (c.member[i]) member[i] |= 1 << k; });
    }

    const { idx, w } = d.row(t);
    const src = d.a.edge_source;
    const dst = d.a.edge_target;
    const kind = d.a.edge_kind;
    const first = status ? d.firstSeen() : null;
    const structural = Math.max(STATUS.length, TASK_COLORS.length, 2); // its colour index
    const nColors = structural + 1;
    const nBuckets = 2 * nColors * WIDTHS.length; // dim bit, colour, width
    const counts = new Uint32Array(nBuckets + 1);
    const n = idx.length;
    const scratchName = target ? "preScratch" : "scratch";
    if (!this[scratchName] || this[scratchName].bucketOf.length < d.E) {
      this[scratchName] = { bucketOf: new Uint16Array(d.E), drawnEdges: new Uint32Array(d.E),
        drawnWeights: new Float32Array(d.E), order: new Uint32Array(d.E) };
    }
    const { bucketOf, drawnEdges, drawnWeights } = this[scratchName];
    const degree = new Uint16Array(d.N);
    const ref = this.weightRef;
    let m = 0;

    const bucket = (e, weight, colour) => {
      const a = Math.abs(weight);
      let wb = a < ref ? Math.floor((a / ref) * 4) : a < 2 * ref ? 4 : 5;
      if (!(wb >= 0)) wb = 0;
      const dim = anyPinned && !(pinned[src[e]] || pinned[dst[e]]) ? 1 : 0;
      return (dim * nColors + colour) * WIDTHS.length + wb;
    };

    for (let k = 0; k < n; k++) {
      const e = idx[k];
      const weight = w[k];
      if (threshold > 0 && !(Math.abs(weight) >= threshold)) continue;
      let colour;
      if (inCircuitView) {
        let bits = 0;
        for (let c = 0; c < circuits.length; c++) {
          if ((member[src[e]] >> c) & 1 && (member[dst[e]] >> c) & 1
              && d.circuitHasEdge(circuits[c], e, t, members[c].member)) bits |= 1 << c;
        }
        if (!bits) continue;
        if (multi) {
          colour = TASK_COLORS.indexOf(this.sourceColor.get(d.tasks[circuits[31 - Math.clz32(bits & -bits)]].name));
        }
      }
      if (!status && (kind[e] === d.kindQK || kind[e] === d.kindResidual)) colour = structural;
      else if (colour === undefined) {
        if (status) colour = t > 0 && d.present(e, t - 1) ? 0 : first[e] === t ? 1 : 2;
        else colour = weight >= 0 ? 0 : 1;
      }
      bucketOf[m] = bucket(e, weight, colour);
      drawnEdges[m] = e;
      drawnWeights[m] = weight;
      counts[bucketOf[m]]++;
      degree[src[e]]++;
      degree[dst[e]]++;
      m++;
    }
    const edgesDrawn = m;
    // dying edges: present at t - 1, gone at t (drawn with their last weight)
    let dying = 0;
    if (status && t > 0) {
      const prev = d.row(t - 1);
      const prevMembers = circuits.map((i) => d.circuit(i, t - 1));
      for (let k = 0; k < prev.idx.length; k++) {
        const e = prev.idx[k];
        if (d.present(e, t)) continue;
        const weight = prev.w[k];
        if (threshold > 0 && !(Math.abs(weight) >= threshold)) continue;
        if (inCircuitView) {
          if (!prevMembers.some((c, j) => c.member[src[e]] && c.member[dst[e]]
              && d.circuitHasEdge(circuits[j], e, t - 1, c.member))) continue;
        }
        bucketOf[m] = bucket(e, weight, 3);
        drawnEdges[m] = e;
        drawnWeights[m] = weight;
        counts[bucketOf[m]]++;
        m++;
        dying++;
      }
    }
    // counting sort by bucket
    const starts = new Uint32Array(nBuckets + 1);
    for (let b = 0; b < nBuckets; b++) starts[b + 1] = starts[b] + counts[b];
    const fill = starts.slice(0, nBuckets);
    const order = this[scratchName].order;
    for (let k = 0; k < m; k++) order[fill[bucketOf[k]]++] = k;
    if (!target) this.drawn = { count: m, edges: drawnEdges, weights: drawnWeights, t };

    // edges, dimmed buckets first
    const sx = this.sx;
    const sy = this.sy;
    const palette = [...(inCircuitView && multi ? TASK_COLORS : status ? STATUS_COLORS
      : SIGN_COLORS)];
    palette[structural] = STRUCTURAL_COLOR;
    const alpha = inCircuitView || anyPinned ? 0.85 : 0.14;
    const fast = !target && !cached && !full && (since < SCRUB_MS || this.playing);
    const ectx = target || (fast ? this.lowContext() : this.edgeCtx);
    ectx.clearRect(0, 0, this.width, this.height);
    ectx.lineCap = "butt";
    if (cached) {
      ectx.drawImage(cached, 0, 0, this.width, this.height);
      this.cache.delete(key);
      this.cache.set(key, cached); // most recently used last
    } else {
    // dimmed first, thin before thick; within a width the colours take turns in chunks, so
    // that no colour is painted over the others wholesale where edges are dense
    const CHUNK = 512;
    const next = new Uint32Array(nColors);
    for (const dim of [1, 0]) {
      for (let wb = 0; wb < WIDTHS.length; wb++) {
        ectx.lineWidth = WIDTHS[wb];
        for (let c = 0; c < nColors; c++) next[c] = starts[(dim * nColors + c) * WIDTHS.length + wb];
        for (let left = true; left;) {
          left = false;
          for (let c = 0; c < nColors; c++) {
            const b = (dim * nColors + c) * WIDTHS.length + wb;
            const from = next[c];
            const to = Math.min(starts[b + 1], from + CHUNK);
            if (from >= to) continue;
            next[c] = to;
            if (to < starts[b + 1]) left = true;
            ectx.strokeStyle = palette[c] || "#777";
            // changes are rare and what the status view is for: drawn strongly
            ectx.globalAlpha = dim ? 0.06 : c === structural ? alpha * 0.7
              : status ? (c > 0 ? Math.max(alpha, 0.9) : alpha * 0.6) : alpha;
            ectx.beginPath();
            for (let k = from; k < to; k++) {
              const e = drawnEdges[order[k]];
              const s = src[e];
              const r = dst[e];
              ectx.moveTo(sx[s], sy[s]);
              if (kind[e] === d.kindQK) {
                ectx.quadraticCurveTo((sx[s] + sx[r]) / 2, sy[s] - this.bandGap * 0.45, sx[r], sy[r]);
              } else ectx.lineTo(sx[r], sy[r]);
            }
            ectx.stroke();
          }
        }
      }
    }
    ectx.globalAlpha = 1;
    }
    if (target) return;
    if (fast) {
      this.edgeCtx.clearRect(0, 0, this.width, this.height);
      this.edgeCtx.drawImage(this.lowCanvas, 0, 0, this.width, this.height);
      clearTimeout(this.settleTimer);
      this.settleTimer = setTimeout(() => this.draw(this.step, null, true), SETTLE_MS);
    } else if (!cached) this.remember(key, this.edgeCanvas);

    // nodes and text on the front layer
    ctx.clearRect(0, 0, this.width, this.height);
    // nodes
    let nodesDrawn = 0;
    ctx.fillStyle = "#444";
    ctx.beginPath();
    for (let i = 0; i < d.N; i++) {
      if (!degree[i] || (member && member[i])) continue;
      ctx.rect(sx[i] - 1, sy[i] - 1, 2, 2);
      nodesDrawn++;
    }
    ctx.fill();
    if (inCircuitView) {
      let maxImp = 0;
      for (const c of members) for (let i = 0; i < d.N; i++) {
        if (c.member[i] && Number.isFinite(c.importance[i])) maxImp = Math.max(maxImp, Math.abs(c.importance[i]));
      }
      members.forEach((c, k) => {
        ctx.fillStyle = this.sourceColor.get(d.tasks[circuits[k]].name);
        ctx.strokeStyle = "#222";
        ctx.lineWidth = 0.6;
        for (let i = 0; i < d.N; i++) {
          if (!c.member[i]) continue;
          const imp = c.importance[i];
          const r = 2 + (Number.isFinite(imp) && maxImp > 0 ? 3 * Math.sqrt(Math.abs(imp) / maxImp) : 0);
          ctx.beginPath();
          ctx.arc(sx[i], sy[i], r, 0, 2 * Math.PI);
          ctx.fill();
          ctx.stroke();
          nodesDrawn++;
        }
      });
    }
    const oscillating = this.drawOscillating(ctx, t);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.6;
    for (const i of selected) {
      ctx.beginPath();
      ctx.arc(sx[i], sy[i], 6, 0, 2 * Math.PI);
      ctx.stroke();
    }
    this.degree = degree;
    this.drawCaption(ctx, edgesDrawn, dying, circuits, members, oscillating);

    const ds = this.root.dataset;
    ds.stepIndex = String(t);
    ds.edgesDrawn = String(edgesDrawn);
    ds.dyingDrawn = String(dying);
    ds.nodesDrawn = String(nodesDrawn);
    ds.oscillatingDrawn = String(oscillating);
    this.updateChrome(t, circuits);
    this.drawSideCursor(t);
    this.drawTimeCursor(t);
    const ms = performance.now() - t0;
    ds.frameMs = ms.toFixed(2);
    ds.cached = cached ? "1" : "0";
    ds.resolution = fast ? "half" : "full";
    this.lastDraw = performance.now();
    this.frames.push(ms);
    if (this.frames.length > 1000) this.frames.splice(0, this.frames.length - 1000);
    this.scheduleWarm();
  }

  // -- the frame cache: the edge layer of each checkpoint, for the current settings --------
  // While the viewer is idle it pre-renders the other checkpoints' edge layers (one per
  // timer tick, nearest first), so scrubbing back and forth draws a cached image.

  lowContext() {
    const w = Math.max(1, Math.round(this.edgeCanvas.width / 2));
    const h = Math.max(1, Math.round(this.edgeCanvas.height / 2));
    if (!this.lowCanvas || this.lowCanvas.width !== w || this.lowCanvas.height !== h) {
      this.lowCanvas = document.createElement("canvas");
      this.lowCanvas.width = w;
      this.lowCanvas.height = h;
    }
    const ctx = this.lowCanvas.getContext("2d");
    ctx.setTransform(w / this.width, 0, 0, h / this.height, 0, 0);
    return ctx;
  }

  cacheLimit() {
    const bytes = this.edgeCanvas.width * this.edgeCanvas.height * 4;
    return Math.max(4, Math.min(this.d.T + 2, Math.floor(CACHE_BYTES / Math.max(1, bytes))));
  }

  remember(key, canvas) {
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    copy.getContext("2d").drawImage(canvas, 0, 0);
    this.cache.set(key, copy);
    while (this.cache.size > this.cacheLimit()) this.cache.delete(this.cache.keys().next().value);
  }

  scheduleWarm() {
    if (this.warmTimer || this.model.get("prerender") === false) return;
    this.warmTimer = setTimeout(() => {
      this.warmTimer = null;
      this.warmOne();
    }, 40);
  }

  warmOne() {
    if (performance.now() - this.lastDraw < SCRUB_MS + SETTLE_MS || this.playing) {
      this.scheduleWarm(); // not while the slider moves
      return;
    }
    const T = this.d.T;
    const now = this.step;
    const wanted = Math.min(T, this.cacheLimit() - 1);
    for (let k = 1; k < T; k++) {
      const t = k % 2 ? now + ((k + 1) >> 1) : now - (k >> 1);
      const tt = ((t % T) + T) % T;
      if (Math.min(Math.abs(tt - now), T - Math.abs(tt - now)) > wanted / 2) break;
      const key = this.frameKey(tt);
      if (this.cache.has(key)) continue;
      const canvas = document.createElement("canvas");
      canvas.width = this.edgeCanvas.width;
      canvas.height = this.edgeCanvas.height;
      const ctx = canvas.getContext("2d");
      const ratio = canvas.width / this.width;
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      this.draw(tt, ctx);
      this.cache.set(key, canvas);
      while (this.cache.size > this.cacheLimit()) {
        this.cache.delete(this.cache.keys().next().value);
      }
      this.scheduleWarm();
      return;
    }
    this.warmed = true;
  }

  settling() {
    return performance.now() - this.lastDraw < SETTLE_MS + 50;
  }

  // resolves once the pre-render has nothing left to do (for benchmarks)
  whenWarm() {
    return new Promise((resolve) => {
      const check = () => (this.warmTimer || this.settling() ? setTimeout(check, 50) : resolve());
      check();
    });
  }

  // wait until the frame is drawn (for benchmarks): reading a pixel finishes the canvases
  flush() {
    for (const canvas of [this.edgeCanvas, this.canvas, this.pathCanvas, this.simCanvas]) {
      canvas?.getContext("2d").getImageData(0, 0, 1, 1);
    }
  }

  drawBands(ctx) {
    const d = this.d;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (const band of d.h.bands) {
      const y = this.bandY(band.y);
      ctx.fillStyle = "#333";
      ctx.fillText(band.label, this.gutter - 8, y);
      ctx.strokeStyle = "#d0d0d0";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (const [x0, x1] of band.spans) {
        ctx.moveTo(this.px(x0), y);
        ctx.lineTo(this.px(x1), y);
      }
      ctx.stroke();
    }
    ctx.textAlign = "left";
  }

  drawCaption(ctx, edgesDrawn, dying, circuits, members, oscillating) {
    const d = this.d;
    const t = this.step;
    ctx.font = "11.5px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillStyle = "#333";
    let text = `${edgesDrawn.toLocaleString("en")} edges drawn`;
    if (dying) text += ` + ${dying.toLocaleString("en")} dying`;
    if (circuits.length) {
      text += " · " + circuits.map((i, k) => {
        const task = d.tasks[i];
        const state = !task.extracted[t] ? "not extracted" : task.solved[t]
          ? `${members[k].size} nodes` : "unsolved";
        return `${task.name}: ${state}`;
      }).join(" · ");
    } else text += ` of ${d.h.checkpoints.edge_counts[t].toLocaleString("en")} in the weight graph`;
    if (this.threshold > 0) text += ` · |w| ≥ ${fmt(this.threshold)}`;
    if (this.showOscillating) {
      text += ` · ${oscillating} of ${this.d.a.oscillating_edge.length} oscillating weights alive`;
    }
    ctx.fillText(text, this.gutter, 8);
    ctx.textBaseline = "alphabetic";
  }

  updateChrome(t, circuits) {
    const d = this.d;
    const c = d.h.checkpoints;
    const cycle = c.cycles[t];
    const phase = cycle < 0 ? "warm-up" : `cycle ${cycle} · block ${c.blocks[t]}`;
    this.title.innerHTML = `<b>${escapeHtml(d.h.run)}</b><span>step <b>${c.steps[t]}</b>` +
      ` (checkpoint ${t + 1} of ${d.T})</span><span>${phase}</span><span>trained: ` +
      `<span class="scv-chip" style="background:${this.colorOf(t)}"></span>` +
      `<b>${escapeHtml(c.sources[t])}</b></span>`;
    if (+this.slider.value !== t) this.slider.value = String(t);
    this.viewSelect.value = this.view;
    this.colorSelect.value = this.colorBy;
    const chosen = new Set(this.model.get("tasks") || []);
    for (const box of this.taskBoxes.querySelectorAll("input")) box.checked = chosen.has(box.value);
    this.thresholdText.textContent = fmt(this.threshold);
    const threshold = this.threshold;
    const slider = Math.round(Math.sqrt(threshold / (this.maxWeight || 1)) * 1000);
    if (Math.abs(+this.thresholdInput.value - slider) > 1) this.thresholdInput.value = String(slider);
    // edge legend
    let items;
    if (this.view === "circuits" && circuits.length > 1) {
      items = circuits.map((i) => [this.sourceColor.get(d.tasks[i].name), d.tasks[i].name]);
    } else if (this.colorBy === "status") {
      items = STATUS.map((s, i) => [STATUS_COLORS[i], s]);
    } else items = [[SIGN_COLORS[0], "w > 0"], [SIGN_COLORS[1], "w < 0"]];
    if (this.colorBy !== "status") items.push([STRUCTURAL_COLOR, "residual / qk"]);
    if (this.showOscillating) items.push([OSCILLATING_COLOR, "oscillates with the cycle"]);
    if (this.oscillatingBox) this.oscillatingBox.checked = this.showOscillating;
    this.edgeLegend.innerHTML = "edges: " + items.map(([col, label]) =>
      `<span><span class="scv-chip" style="background:${col}"></span>${escapeHtml(label)}</span>`)
      .join(" ") + ' <span class="scv-muted">width ∝ |w|</span>';
    this.drawStrip(t);
    this.updateInfo();
  }

  colorOf(t) {
    const c = this.d.h.checkpoints;
    return c.cycles[t] < 0 ? WARMUP_COLOR : this.sourceColor.get(c.sources[t]) || "#999";
  }

  drawStrip(t) {
    const d = this.d;
    // the slider's width (the strip's own is fixed by its last drawing)
    const width = this.strip.parentElement.clientWidth || this.slider.clientWidth || 600;
    const height = 34;
    if (this.stripWidth !== width) {
      this.stripCtx = setupCanvas(this.strip, width, height);
      this.stripWidth = width;
      const names = [...new Set(d.h.checkpoints.sources.filter((_, i) => d.h.checkpoints.cycles[i] >= 0))];
      this.sourceLegend.innerHTML = "trained: " + names.map((name) =>
        `<span><span class="scv-chip" style="background:${this.sourceColor.get(name)}"></span>` +
        `${escapeHtml(name)}</span>`).join(" ") + (d.h.checkpoints.cycles.some((c) => c < 0)
        ? ` <span><span class="scv-chip" style="background:${WARMUP_COLOR}"></span>warm-up</span>`
        : "") + ' <span class="scv-muted">· ←/→ step, space plays</span>';
    }
    const ctx = this.stripCtx;
    const inner = width - 16;
    const cell = inner / d.T;
    ctx.clearRect(0, 0, width, height);
    const cycles = d.h.checkpoints.cycles;
    for (let i = 0; i < d.T; i++) {
      ctx.fillStyle = this.colorOf(i);
      ctx.fillRect(8 + i * cell, 4, Math.max(1, cell - (cell > 4 ? 1 : 0)), 14);
      if (i > 0 && cycles[i] !== cycles[i - 1]) {
        ctx.fillStyle = "#333";
        ctx.fillRect(8 + i * cell - 1, 0, 1.5, 22);
      }
    }
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.strokeRect(8 + t * cell, 3, Math.max(2, cell - 1), 16);
    ctx.fillStyle = "#555";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    const steps = d.h.checkpoints.steps;
    ctx.textAlign = "left";
    ctx.fillText(`step ${steps[0]}`, 8, 22);
    ctx.textAlign = "right";
    ctx.fillText(`step ${steps[d.T - 1]}`, width - 8, 22);
    ctx.textAlign = "left";
  }

  // -- side panels: loss matrix and loss curves ----------------------------------------------

  lossRow(t) {
    // the last evaluation row at or before the checkpoint's step
    const loss = this.d.h.loss;
    if (!loss) return -1;
    const step = this.d.h.checkpoints.steps[t];
    let row = -1;
    for (let r = 0; r < loss.steps.length; r++) if (loss.steps[r] <= step) row = r;
    return row;
  }

  drawSide() {
    const d = this.d;
    const loss = d.h.loss;
    const W = SIDE_WIDTH;
    // read back once per resize and put back at every frame (the cursor moves over them)
    this.matrixCtx = setupCanvas(this.matrixCanvas, W, 270, { willReadFrequently: true });
    this.curvesCtx = setupCanvas(this.curvesCanvas, W, 230, { willReadFrequently: true });
    this.matrixBase = null;
    this.curvesBase = null;
    if (!loss) {
      for (const ctx of [this.matrixCtx, this.curvesCtx]) {
        ctx.fillStyle = "#666";
        ctx.font = "12px system-ui, sans-serif";
        ctx.fillText("no loss matrix (evals.jsonl) in this run", 12, 24);
      }
      return;
    }
    const R = loss.steps.length;
    const S = loss.sources.length;
    const L = d.a.loss;
    // loss matrix: rows = evaluations (block ends), columns = sources, colour scaled per source
    const ctx = this.matrixCtx;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#222";
    ctx.textBaseline = "top";
    ctx.fillText("loss matrix (colour: loss, per source)", 8, 6);
    const left = 52;
    const top = 24;
    const labelH = 64;
    const gw = W - left - 10;
    const gh = 270 - top - labelH - 6;
    const cw = gw / S;
    const ch = gh / R;
    this.matrixGeom = { left, top, cw, ch, R, S };
    for (let j = 0; j < S; j++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let r = 0; r < R; r++) {
        const v = L[r * S + j];
        if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      for (let r = 0; r < R; r++) {
        const v = L[r * S + j];
        ctx.fillStyle = Number.isFinite(v) ? viridis(hi > lo ? (v - lo) / (hi - lo) : 0.5) : "#eee";
        ctx.fillRect(left + j * cw, top + r * ch, Math.ceil(cw), Math.ceil(ch));
        if (loss.trained[r] === loss.sources[j]) {
          ctx.fillStyle = "#fff";
          ctx.beginPath();
          ctx.arc(left + (j + 0.5) * cw, top + (r + 0.5) * ch, Math.min(3, ch / 3), 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    }
    ctx.fillStyle = "#333";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil(11 / ch));
    for (let r = 0; r < R; r += every) ctx.fillText(String(loss.steps[r]), left - 4, top + (r + 0.5) * ch);
    ctx.save();
    for (let j = 0; j < S; j++) {
      ctx.save();
      ctx.translate(left + (j + 0.5) * cw, top + gh + 4);
      ctx.rotate(-Math.PI / 4);
      ctx.textAlign = "right";
      ctx.fillStyle = this.sourceColor.get(loss.sources[j]) === undefined ? "#333" : "#333";
      const name = loss.sources[j];
      ctx.fillText(name.length > 14 ? name.slice(0, 13) + "…" : name, 0, 0);
      ctx.restore();
    }
    ctx.restore();
    ctx.save();
    ctx.translate(10, top + gh / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center";
    ctx.fillText("step (● = trained)", 0, 0);
    ctx.restore();
    ctx.textAlign = "left";
    this.matrixBase = ctx.getImageData(0, 0, this.matrixCanvas.width, this.matrixCanvas.height);

    // per-task loss curves
    const c2 = this.curvesCtx;
    const taskNames = d.tasks.map((task) => task.name).filter((n) => loss.sources.includes(n));
    const shown = taskNames.length ? taskNames : loss.sources;
    const cl = 40;
    const ct = 24;
    const cwid = W - cl - 12;
    const chei = 230 - ct - 58;
    let hi = 0;
    for (const name of shown) {
      const j = loss.sources.indexOf(name);
      for (let r = 0; r < R; r++) { const v = L[r * S + j]; if (Number.isFinite(v)) hi = Math.max(hi, v); }
    }
    hi = hi > 0 ? hi * 1.05 : 1;
    const s0 = loss.steps[0];
    const s1 = Math.max(loss.steps[R - 1], d.h.checkpoints.steps[d.T - 1]);
    const X = (s) => cl + ((s - Math.min(s0, d.h.checkpoints.steps[0])) /
      Math.max(1, s1 - Math.min(s0, d.h.checkpoints.steps[0]))) * cwid;
    const Y = (v) => ct + chei - (v / hi) * chei;
    this.curvesGeom = { X, ct, chei };
    c2.font = "12px system-ui, sans-serif";
    c2.fillStyle = "#222";
    c2.textBaseline = "top";
    c2.fillText("loss per task", 8, 6);
    c2.strokeStyle = "#999";
    c2.lineWidth = 1;
    c2.beginPath();
    c2.moveTo(cl, ct);
    c2.lineTo(cl, ct + chei);
    c2.lineTo(cl + cwid, ct + chei);
    c2.stroke();
    c2.font = "10px system-ui, sans-serif";
    c2.fillStyle = "#333";
    c2.textAlign = "right";
    c2.textBaseline = "middle";
    for (const v of [0, hi / 2, hi / 1.05]) c2.fillText(fmt(v, 2), cl - 4, Y(v));
    c2.textAlign = "center";
    c2.textBaseline = "top";
    c2.fillText("step", cl + cwid / 2, ct + chei + 14);
    c2.fillText(String(s0), cl, ct + chei + 3);
    c2.fillText(String(s1), cl + cwid - 8, ct + chei + 3);
    for (const name of shown) {
      const j = loss.sources.indexOf(name);
      c2.strokeStyle = this.sourceColor.get(name) || "#777";
      c2.lineWidth = 1.6;
      c2.beginPath();
      let started = false;
      for (let r = 0; r < R; r++) {
        const v = L[r * S + j];
        if (!Number.isFinite(v)) { started = false; continue; }
        if (!started) c2.moveTo(X(loss.steps[r]), Y(v)); else c2.lineTo(X(loss.steps[r]), Y(v));
        started = true;
      }
      c2.stroke();
    }
    // legend under the axis, wrapping onto a second line
    c2.textAlign = "left";
    let lx = cl;
    let ly = ct + chei + 28;
    for (const name of shown) {
      const label = name.length > 16 ? name.slice(0, 15) + "…" : name;
      const wText = c2.measureText(label).width;
      if (lx + 14 + wText > W - 4) { lx = cl; ly += 13; }
      c2.fillStyle = this.sourceColor.get(name) || "#777";
      c2.fillRect(lx, ly + 2, 10, 6);
      c2.fillStyle = "#333";
      c2.fillText(label, lx + 13, ly);
      lx += 22 + wText;
    }
    this.curvesBase = c2.getImageData(0, 0, this.curvesCanvas.width, this.curvesCanvas.height);
  }

  drawSideCursor(t) {
    if (!this.matrixBase) return;
    const ctx = this.matrixCtx;
    ctx.putImageData(this.matrixBase, 0, 0);
    const row = this.lossRow(t);
    if (row >= 0) {
      const { left, top, cw, ch, S } = this.matrixGeom;
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.strokeRect(left - 1, top + row * ch, S * cw + 2, ch);
    }
    const c2 = this.curvesCtx;
    c2.putImageData(this.curvesBase, 0, 0);
    const { X, ct, chei } = this.curvesGeom;
    const x = X(this.d.h.checkpoints.steps[t]);
    c2.strokeStyle = "#000";
    c2.lineWidth = 1;
    c2.setLineDash([3, 3]);
    c2.beginPath();
    c2.moveTo(x, ct);
    c2.lineTo(x, ct + chei);
    c2.stroke();
    c2.setLineDash([]);
  }

  // -- time in the weights --------------------------------------------------------------------
  // The numbers of `sparsecircuits analyze` (header.time): the PCA path, a similarity matrix
  // and the oscillating weights. Each picture is drawn once (again when its selector changes),
  // under a transparent canvas on which a frame draws the current checkpoint.

  get showOscillating() {
    return !!this.model.get("oscillating") && !!this.d.a.oscillating_edge?.length;
  }

  buildTime() {
    const time = this.d.h.time || { missing: "this bundle carries no time analyses" };
    this.time = time;
    const head = h("div", { class: "scv-time-head" }, h("b", {}, "time in the weights"));
    const box = h("div", { class: "scv-time" }, head);
    if (time.missing) {
      head.append(h("span", { class: "scv-muted" }, time.missing));
      return box;
    }
    const body = h("div", { class: "scv-time-body" });
    box.append(body);
    const note = (text) => body.append(h("div", { class: "scv-time-note" }, text));
    if (time.trajectory) {
      this.pathKind = "weights";
      const select = h("select", { "aria-label": "path of" },
        h("option", { value: "weights" }, "weights"), h("option", { value: "masks" }, "masks"));
      select.addEventListener("change", () => { this.pathKind = select.value; this.drawPath(); });
      head.append(h("label", {}, "path of the ", select));
      [this.pathBack, this.pathCanvas] = this.stack(body, "scv-path", PATH_WIDTH);
      this.pathCanvas.addEventListener("mousemove", (ev) => this.onPathHover(ev));
      this.pathCanvas.addEventListener("click", (ev) => {
        const t = this.pathPick(ev);
        if (t >= 0) this.set("step_index", t);
      });
      this.drawPath();
    } else {
      note("no trajectory in analysis/trajectory.json (sparsecircuits analyze --what trajectory)");
    }
    if (time.similarity) {
      const names = Object.keys(time.similarity.matrices);
      this.matrixName = names[0];
      const select = h("select", { "aria-label": "similarity" },
        ...names.map((n) => h("option", { value: n }, MATRIX_TITLES[n] || n)));
      select.addEventListener("change", () => {
        this.matrixName = select.value;
        this.drawSimilarity();
      });
      head.append(h("label", {}, "similarity: ", select));
      [this.simBack, this.simCanvas] = this.stack(body, "scv-similarity", MATRIX_WIDTH);
      this.simCanvas.addEventListener("click", (ev) => {
        const t = this.similarityPick(ev);
        if (t >= 0) this.set("step_index", t);
      });
      this.drawSimilarity();
    } else {
      note("no similarity matrices in analysis/trajectory.json (sparsecircuits analyze --what " +
        "similarity)");
    }
    const osc = time.oscillation;
    const lines = [];
    for (const [kind, info] of Object.entries(time.trajectory || {})) {
      lines.push(`<b>${kind}</b>: PC1 and PC2 hold ${Math.round(100 * info.explained_first2)} % ` +
        `of the variance; closure ${fmt(info.closure, 2)} (${fmt(info.closure_pc12, 2)} in ` +
        "their plane)");
    }
    if (time.similarity) {
      lines.push("<b>period</b> found in the " + Object.entries(time.similarity.matrices).map(
        ([name, m]) => `${MATRIX_TITLES[name] || escapeHtml(name)}: ${m.period ?? "none"}`)
        .join("; ") + `; the schedule's: ${time.similarity.schedule_period}`);
    }
    if (osc) {
      const text = `${osc.oscillating.toLocaleString("en")} of ` +
        `${osc.flipping.toLocaleString("en")} flipping weights oscillate with the cycle ` +
        `(period ${osc.period}; at most ` +
        `${fmt(osc.expected_false, 1)} would pass by chance)`;
      if (osc.carried) {
        this.oscillatingBox = h("input", { type: "checkbox" });
        this.oscillatingBox.addEventListener("change",
          () => this.set("oscillating", this.oscillatingBox.checked));
        head.append(h("label", { title: text }, this.oscillatingBox,
          h("span", { class: "scv-chip", style: `background:${OSCILLATING_COLOR}` }),
          `highlight the ${osc.carried.toLocaleString("en")} oscillating weights`));
      }
      lines.push(`<b>oscillation</b>: ${text}` + (osc.outside_graph ? `, ${osc.outside_graph} ` +
        "of them biases (not in the graph)" : "") + (osc.listed ? ""
        : "; rerun sparsecircuits analyze to list them"));
    } else lines.push("no oscillation analysis");
    lines.push('<span class="scv-muted">closure: 0 when the path closes a loop each cycle, ' +
      "about 1 when it walks on</span>");
    const summary = h("div", { class: "scv-time-note scv-time-summary" });
    summary.innerHTML = lines.map((line) => `<div>${line}</div>`).join("");
    body.append(summary);
    return box;
  }

  // two canvases in a box appended to `parent`: the still picture (class `name`) and, over it,
  // the cursor (`name`-cursor), which takes the clicks
  stack(parent, name, width) {
    const back = h("canvas", { class: name });
    const front = h("canvas", { class: `${name}-cursor` });
    setupCanvas(front, width, TIME_HEIGHT);
    parent.append(h("div", { class: "scv-stack",
      style: `width:${width + 2}px;height:${TIME_HEIGHT + 2}px` }, back, front));
    return [back, front];
  }

  // the still picture's context, cleared to white
  still(canvas, width) {
    const ctx = setupCanvas(canvas, width, TIME_HEIGHT);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, TIME_HEIGHT);
    return ctx;
  }

  drawPath() {
    const d = this.d;
    const kind = this.pathKind;
    const info = this.time.trajectory[kind];
    const xy = d.a[`trajectory.${kind}`];
    const W = PATH_WIDTH;
    const H = TIME_HEIGHT;
    const ctx = this.still(this.pathBack, W);
    const left = 56;
    const right = W - 66;
    const top = 30;
    const bottom = H - 40;
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (let t = 0; t < d.T; t++) {
      x0 = Math.min(x0, xy[2 * t]); x1 = Math.max(x1, xy[2 * t]);
      y0 = Math.min(y0, xy[2 * t + 1]); y1 = Math.max(y1, xy[2 * t + 1]);
    }
    const padX = (x1 - x0) * 0.06 || 1;
    const padY = (y1 - y0) * 0.06 || 1;
    x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
    const X = (v) => left + ((v - x0) / (x1 - x0)) * (right - left);
    const Y = (v) => bottom - ((v - y0) / (y1 - y0)) * (bottom - top);
    this.pathXY = new Float32Array(2 * d.T);
    for (let t = 0; t < d.T; t++) {
      this.pathXY[2 * t] = X(xy[2 * t]);
      this.pathXY[2 * t + 1] = Y(xy[2 * t + 1]);
    }
    this.drawAxes(ctx, { left, right, top, bottom }, [x0, x1], [y0, y1],
      `PC1 (${Math.round(100 * info.explained[0])} % of variance)`,
      `PC2 (${Math.round(100 * (info.explained[1] ?? 0))} %)`);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#222";
    ctx.textBaseline = "top";
    ctx.fillText(`${kind}: path through the checkpoints (closure ${fmt(info.closure, 2)})`, 8, 6);
    const P = this.pathXY;
    ctx.strokeStyle = NEUTRAL;
    ctx.lineWidth = 0.8;
    ctx.beginPath();
    for (let t = 0; t < d.T; t++) ctx[t ? "lineTo" : "moveTo"](P[2 * t], P[2 * t + 1]);
    ctx.stroke();
    const { cycles } = d.h.checkpoints;
    for (let t = 0; t < d.T; t++) {
      ctx.fillStyle = this.cycleColor(t);
      ctx.beginPath();
      ctx.arc(P[2 * t], P[2 * t + 1], 4, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "bottom";
    for (let t = 0; t < d.T; t++) {
      if (cycles[t] < 0 || (t > 0 && cycles[t] === cycles[t - 1])) continue;
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 0.8;
      ctx.beginPath();
      ctx.arc(P[2 * t], P[2 * t + 1], 6.5, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.fillStyle = "#222";
      ctx.fillText(`cycle ${cycles[t]}`, P[2 * t] + 8, P[2 * t + 1] - 8);
    }
    // colour bar: position in the cycle
    const period = this.time.period;
    const bx = W - 44;
    if (period > 1) {
      for (let k = 0; k < 60; k++) {
        ctx.fillStyle = viridis(1 - k / 59);
        ctx.fillRect(bx, top + (k * (bottom - top)) / 60, 10, (bottom - top) / 60 + 0.5);
      }
      ctx.fillStyle = "#333";
      ctx.textBaseline = "middle";
      ctx.fillText(String(period - 1), bx + 13, top);
      ctx.fillText("0", bx + 13, bottom);
      this.verticalText(ctx, "position in the cycle", bx + 30, (top + bottom) / 2);
    }
    this.drawTimeCursor(this.step);
  }

  cycleColor(t) {
    const c = this.d.h.checkpoints;
    const period = Math.max(this.time.period, 1);
    return c.cycles[t] < 0 ? NEUTRAL : viridis(c.positions[t] / Math.max(period - 1, 1));
  }

  verticalText(ctx, text, x, y) {
    ctx.save();
    ctx.translate(x, y);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(text, 0, 0);
    ctx.restore();
  }

  // left and bottom spines with a few ticks, and the axes' labels
  drawAxes(ctx, box, [x0, x1], [y0, y1], xLabel, yLabel) {
    const { left, right, top, bottom } = box;
    ctx.strokeStyle = "#444";
    ctx.lineWidth = 0.8;
    ctx.beginPath();
    ctx.moveTo(left, top);
    ctx.lineTo(left, bottom);
    ctx.lineTo(right, bottom);
    ctx.stroke();
    ctx.fillStyle = "#333";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of niceTicks(x0, x1)) {
      const x = left + ((v - x0) / (x1 - x0)) * (right - left);
      ctx.fillRect(x, bottom, 0.8, 3);
      ctx.fillText(fmt(v, 2), x, bottom + 4);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of niceTicks(y0, y1)) {
      const y = bottom - ((v - y0) / (y1 - y0)) * (bottom - top);
      ctx.fillRect(left - 3, y, 3, 0.8);
      ctx.fillText(fmt(v, 2), left - 5, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(xLabel, (left + right) / 2, bottom + 20);
    this.verticalText(ctx, yLabel, 12, (top + bottom) / 2);
    ctx.textAlign = "left";
  }

  drawSimilarity() {
    const d = this.d;
    const name = this.matrixName;
    const info = this.time.similarity.matrices[name];
    const rows = info.checkpoints;
    const n = rows.length;
    const m = d.a[`similarity.${name}`];
    const W = MATRIX_WIDTH;
    const H = TIME_HEIGHT;
    const ctx = this.still(this.simBack, W);
    const top = 40;
    const left = 40;
    const size = Math.min(W - left - 70, H - top - 40);
    const cell = size / Math.max(1, n);
    // cosines on a fixed scale, -1 to 1, like the figures; Jaccard on its own range
    let lo = -1;
    let hi = 1;
    const cosine = name !== "jaccard";
    if (!cosine) {
      lo = Infinity; hi = -Infinity;
      for (let k = 0; k < n * n; k++) {
        lo = Math.min(lo, F16[m[k]]);
        hi = Math.max(hi, F16[m[k]]);
      }
      if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    }
    const colour = (v) => ramp(cosine ? RDBU_R : CIVIDIS, (v - lo) / (hi - lo));
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        ctx.fillStyle = colour(F16[m[i * n + j]]);
        ctx.fillRect(left + j * cell, top + i * cell, Math.ceil(cell), Math.ceil(cell));
      }
    }
    // cycle boundaries, dashed
    const { cycles, steps } = d.h.checkpoints;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 0.7;
    ctx.setLineDash([3, 2]);
    ctx.beginPath();
    for (let k = 1; k < n; k++) {
      if (cycles[rows[k]] === cycles[rows[k - 1]]) continue;
      ctx.moveTo(left + k * cell, top); ctx.lineTo(left + k * cell, top + size);
      ctx.moveTo(left, top + k * cell); ctx.lineTo(left + size, top + k * cell);
    }
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#222";
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(MATRIX_TITLES[name] || name, 8, 4);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(`period found ${info.period ?? "none"}, schedule ` +
      `${this.time.similarity.schedule_period}`, 8, 20);
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillStyle = "#333";
    ctx.textAlign = "center";
    ctx.fillText(`checkpoint (step ${steps[rows[0]]} … ${steps[rows[n - 1]]})`, left + size / 2,
      top + size + 6);
    ctx.font = "11px system-ui, sans-serif";
    this.verticalText(ctx, "checkpoint", 20, top + size / 2);
    // colour bar
    const bx = left + size + 14;
    for (let k = 0; k < 60; k++) {
      ctx.fillStyle = ramp(cosine ? RDBU_R : CIVIDIS, 1 - k / 59);
      ctx.fillRect(bx, top + (k * size) / 60, 10, size / 60 + 0.5);
    }
    ctx.fillStyle = "#333";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillText(fmt(hi, 2), bx + 13, top);
    ctx.fillText(fmt(lo, 2), bx + 13, top + size);
    this.simGeom = { left, top, cell, size, rows, index: new Map(rows.map((t, k) => [t, k])) };
    this.drawTimeCursor(this.step);
  }

  drawTimeCursor(t) {
    if (this.time.missing || !this.root) return; // the first frame draws it
    if (this.pathCanvas) {
      const ctx = this.pathCanvas.getContext("2d");
      ctx.clearRect(0, 0, PATH_WIDTH, TIME_HEIGHT);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2.5;
      ctx.beginPath();
      ctx.arc(this.pathXY[2 * t], this.pathXY[2 * t + 1], 9, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (this.simCanvas) {
      const ctx = this.simCanvas.getContext("2d");
      ctx.clearRect(0, 0, MATRIX_WIDTH, TIME_HEIGHT);
      const { left, top, cell, size, index } = this.simGeom;
      const k = index.get(t);
      if (k !== undefined) {
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 2;
        ctx.strokeRect(left - 2, top + k * cell, size + 4, cell);
      } else {
        ctx.fillStyle = "#666";
        ctx.font = "10px system-ui, sans-serif";
        ctx.textBaseline = "top";
        ctx.fillText("no row for this checkpoint (the first)", left, top + size + 20);
      }
    }
    this.root.dataset.timeStep = String(t);
  }

  // the checkpoint nearest the mouse on the path (within 10 px), else -1
  pathPick(ev) {
    const r = this.pathCanvas.getBoundingClientRect();
    const mx = ev.clientX - r.left;
    const my = ev.clientY - r.top;
    let best = -1;
    let bestD = 10;
    for (let t = 0; t < this.d.T; t++) {
      const dist = Math.hypot(this.pathXY[2 * t] - mx, this.pathXY[2 * t + 1] - my);
      if (dist < bestD) { bestD = dist; best = t; }
    }
    return best;
  }

  onPathHover(ev) {
    const t = this.pathPick(ev);
    this.pathCanvas.style.cursor = t >= 0 ? "pointer" : "default";
    if (t < 0) { this.pathCanvas.title = ""; return; }
    const c = this.d.h.checkpoints;
    this.pathCanvas.title = `step ${c.steps[t]} · ` + (c.cycles[t] < 0 ? "warm-up"
      : `cycle ${c.cycles[t]}, position ${c.positions[t]}`) + ` · trained ${c.sources[t]}` +
      " (click: go there)";
  }

  // the checkpoint of the clicked cell's column, else -1
  similarityPick(ev) {
    const r = this.simCanvas.getBoundingClientRect();
    const { left, top, cell, size, rows } = this.simGeom;
    const x = ev.clientX - r.left - left;
    const y = ev.clientY - r.top - top;
    if (x < 0 || y < 0 || x >= size || y >= size) return -1;
    return rows[Math.min(rows.length - 1, Math.floor(x / cell))];
  }

  // the oscillating weights on the front layer: solid where alive at t, dashed where not;
  // returns how many are alive
  drawOscillating(ctx, t) {
    if (!this.showOscillating) return 0;
    const d = this.d;
    const list = d.a.oscillating_edge;
    const { edge_source: src, edge_target: dst } = d.a;
    let alive = 0;
    ctx.save();
    ctx.strokeStyle = OSCILLATING_COLOR;
    for (const on of [0, 1]) {
      ctx.globalAlpha = on ? 0.95 : 0.6;
      ctx.lineWidth = on ? 2.4 : 1;
      ctx.setLineDash(on ? [] : [4, 3]);
      ctx.beginPath();
      for (let k = 0; k < list.length; k++) {
        const e = list[k];
        if (d.present(e, t) !== on) continue;
        ctx.moveTo(this.sx[src[e]], this.sy[src[e]]);
        ctx.lineTo(this.sx[dst[e]], this.sy[dst[e]]);
        alive += on;
      }
      ctx.stroke();
    }
    ctx.restore();
    return alive;
  }

  // -- hover, selection, ablation -----------------------------------------------------------

  pick(ev) {
    const rect = this.canvas.getBoundingClientRect();
    const mx = ev.clientX - rect.left;
    const my = ev.clientY - rect.top;
    const d = this.d;
    // nearest node on the nearest band
    let best = null;
    for (const [y, list] of this.bandNodes) {
      const py = this.bandY(y);
      if (Math.abs(py - my) > 6) continue;
      let lo = 0;
      let hi = list.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.sx[list[mid]] < mx) lo = mid + 1; else hi = mid;
      }
      for (const k of [lo - 1, lo]) {
        if (k < 0 || k >= list.length) continue;
        const i = list[k];
        const dist = Math.hypot(this.sx[i] - mx, this.sy[i] - my);
        if (dist <= 6 && (!best || dist < best.dist)) best = { type: "node", i, dist };
      }
    }
    if (best) return best;
    // nearest drawn edge within 4 px
    const drawn = this.drawn;
    if (!drawn) return null;
    const src = d.a.edge_source;
    const dst = d.a.edge_target;
    let bestE = -1;
    let bestD = 4;
    for (let k = 0; k < drawn.count; k++) {
      const e = drawn.edges[k];
      const x1 = this.sx[src[e]];
      const y1 = this.sy[src[e]];
      const x2 = this.sx[dst[e]];
      const y2 = this.sy[dst[e]];
      if (mx < Math.min(x1, x2) - 4 || mx > Math.max(x1, x2) + 4) continue;
      if (my < Math.min(y1, y2) - 4 || my > Math.max(y1, y2) + 4) continue;
      const dx = x2 - x1;
      const dy = y2 - y1;
      const len = dx * dx + dy * dy || 1;
      const u = Math.max(0, Math.min(1, ((mx - x1) * dx + (my - y1) * dy) / len));
      const dist = Math.hypot(x1 + u * dx - mx, y1 + u * dy - my);
      if (dist < bestD) { bestD = dist; bestE = k; }
    }
    return bestE >= 0 ? { type: "edge", e: drawn.edges[bestE], w: drawn.weights[bestE] } : null;
  }

  onHover(ev) {
    const hit = this.pick(ev);
    if (!hit) { this.tip.style.display = "none"; return; }
    const d = this.d;
    const t = this.step;
    let html;
    if (hit.type === "node") {
      const i = hit.i;
      const imps = d.tasks.map((task, k) => {
        const c = d.circuit(k, t);
        return c.member[i] ? `${escapeHtml(task.name)} ${fmt(c.importance[i])}` : null;
      }).filter(Boolean);
      const { inDeg, outDeg } = this.nodeDegrees(i, t);
      html = `<code>${escapeHtml(d.nodeId(i))}</code><br>degree ${inDeg + outDeg}` +
        ` (in ${inDeg}, out ${outDeg}) at step ${d.h.checkpoints.steps[t]}<br>importance: ` +
        (imps.length ? imps.join(", ") : '<span class="scv-muted">in no circuit here</span>') +
        '<br><span class="scv-muted">click to pin its neighbourhood</span>';
    } else {
      const e = hit.e;
      const steps = d.h.checkpoints.steps;
      const spells = d.spells(e).map(([a, b]) => a === b ? `${steps[a]}` : `${steps[a]}–${steps[b]}`);
      html = `<code>${escapeHtml(d.nodeId(d.a.edge_source[e]))}</code> →<br>` +
        `<code>${escapeHtml(d.nodeId(d.a.edge_target[e]))}</code><br>` +
        `${escapeHtml(d.kinds[d.a.edge_kind[e]])} · <code>${escapeHtml(d.h.params[d.a.edge_param[e]])}</code><br>` +
        `weight <b>${fmt(hit.w, 4)}</b>${d.present(e, t) ? "" : " (at the previous checkpoint)"}<br>` +
        `present at steps ${spells.join(", ")}<br>` + this.sparkline(e);
    }
    this.tip.innerHTML = html;
    this.tip.style.display = "block";
    const rect = this.canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left;
    const y = ev.clientY - rect.top;
    const tw = this.tip.offsetWidth;
    const th = this.tip.offsetHeight;
    this.tip.style.left = `${x + 14 + tw > this.width ? x - tw - 10 : x + 14}px`;
    this.tip.style.top = `${y + 14 + th > this.height ? Math.max(0, y - th - 10) : y + 14}px`;
  }

  nodeDegrees(i, t) {
    const d = this.d;
    const { idx } = d.row(t);
    let inDeg = 0;
    let outDeg = 0;
    for (let k = 0; k < idx.length; k++) {
      const e = idx[k];
      if (d.a.edge_source[e] === i) outDeg++;
      else if (d.a.edge_target[e] === i) inDeg++;
    }
    return { inDeg, outDeg };
  }

  sparkline(e) {
    // the edge's weight over the checkpoints as a small inline SVG (one element per checkpoint)
    const d = this.d;
    const W = 220;
    const H = 40;
    const values = [];
    let hi = 0;
    for (let t = 0; t < d.T; t++) {
      const v = d.weight(e, t);
      values.push(v);
      if (Number.isFinite(v)) hi = Math.max(hi, Math.abs(v));
    }
    hi = hi || 1;
    const bw = W / d.T;
    const bars = values.map((v, t) => {
      if (!Number.isFinite(v)) return "";
      const hgt = (Math.abs(v) / hi) * (H / 2 - 2);
      const y = v >= 0 ? H / 2 - hgt : H / 2;
      return `<rect x="${(t * bw).toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" ` +
        `height="${Math.max(0.5, hgt).toFixed(1)}" fill="${v >= 0 ? SIGN_COLORS[0] : SIGN_COLORS[1]}"/>`;
    }).join("");
    const cursor = `<rect x="${(this.step * bw).toFixed(1)}" y="0" width="${Math.max(1, bw - 1).toFixed(1)}" ` +
      `height="${H}" fill="none" stroke="#000" stroke-width="1"/>`;
    return `<svg width="${W}" height="${H}" style="display:block;margin-top:3px">` +
      `<line x1="0" x2="${W}" y1="${H / 2}" y2="${H / 2}" stroke="#bbb"/>${bars}${cursor}</svg>` +
      '<span class="scv-muted">weight at each checkpoint (gap: absent)</span>';
  }

  onClick(ev) {
    const hit = this.pick(ev);
    if (!hit || hit.type !== "node") return;
    const id = this.d.nodeId(hit.i);
    const selected = [...(this.model.get("selected") || [])];
    const at = selected.indexOf(id);
    if (at >= 0) selected.splice(at, 1); else selected.push(id);
    this.lastAblation = null;
    this.set("selected", selected);
  }

  updateInfo() {
    const d = this.d;
    const t = this.step;
    const ids = this.model.get("selected") || [];
    const canAblate = !!this.model.get("can_ablate");
    if (!ids.length) {
      this.info.innerHTML = '<span class="scv-muted">Hover a node or an edge for details; click ' +
        "nodes to pin their neighbourhood" + (canAblate ? " and ablate them." : ".") + "</span>";
      return;
    }
    const index = this.nodeIndex();
    const tasks = d.tasks;
    let html = `<b>${ids.length} pinned node${ids.length > 1 ? "s" : ""}</b> ` +
      '<button class="scv-clear">clear</button>';
    if (canAblate) html += ' <button class="scv-ablate">ablate at this checkpoint</button>';
    html += '<table><tr><th>node</th><th>importance in circuits here</th></tr>';
    for (const id of ids) {
      const i = index.get(id);
      const here = tasks.map((task, k) => {
        const c = d.circuit(k, t);
        return c.member[i] ? `${escapeHtml(task.name)} ${fmt(c.importance[i])}` : null;
      }).filter(Boolean);
      html += `<tr><td><code>${escapeHtml(id)}</code></td><td style="text-align:left">` +
        (here.length ? here.join(", ") : '<span class="scv-muted">none</span>') + "</td></tr>";
    }
    html += '</table><span class="scv-muted">the stored importance of each pinned node in the ' +
      "circuits it belongs to at this checkpoint</span>";
    const a = this.lastAblation;
    if (canAblate && a && a.step_index === t) {
      if (a.error) html += `<div style="color:#D55E00">ablation failed: ${escapeHtml(a.error)}</div>`;
      else if (a.pending) html += '<div class="scv-muted">ablating…</div>';
      else {
        html += `<div style="margin-top:4px"><b>${escapeHtml(a.method)}-ablation at step ${a.step}</b></div>` +
          "<table><tr><th>task</th><th>loss</th><th>ablated</th><th>Δ</th></tr>" +
          Object.entries(a.results).map(([task, r]) => `<tr><td>${escapeHtml(task)}</td>` +
            `<td>${fmt(r.loss)}</td><td>${fmt(r.ablated)}</td><td><b>${r.delta >= 0 ? "+" : ""}${fmt(r.delta)}</b></td></tr>`)
            .join("") + "</table>";
        if (a.skipped?.length) html += `<span class="scv-muted">not ablatable (no hook): ${a.skipped.map(escapeHtml).join(", ")}</span>`;
      }
    }
    this.info.innerHTML = html;
    this.info.querySelector(".scv-clear").addEventListener("click", () => {
      this.lastAblation = null;
      this.set("selected", []);
    });
    const button = this.info.querySelector(".scv-ablate");
    if (button) button.addEventListener("click", () => this.requestAblation());
  }

  requestAblation() {
    const nodes = this.model.get("selected") || [];
    this.lastAblation = { step_index: this.step, pending: true };
    this.model.send({ type: "ablate", step_index: this.step, nodes });
    this.updateInfo();
  }

  onMessage(msg) {
    if (!msg || msg.type !== "ablation") return;
    this.lastAblation = msg;
    this.updateInfo();
  }
}

export default { render };
