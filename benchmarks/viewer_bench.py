"""The circuit viewer in headless Chromium: page load time and frame time while scrubbing.

    .venv/bin/python benchmarks/viewer_bench.py [RUN_DIR] [--checkpoints 100] [--edges 120000]
                                                [--json FILE]

Two timelines: the run in RUN_DIR (the demo run; read only, its bundle is built in memory), and
a synthetic one of ``--checkpoints`` x ``--edges`` (union edges over a 4-layer model, about 60%
present at a time, with deaths and revivals, six task circuits). Each is exported as the
standalone page and opened from disk in Debian's Chromium with every network request blocked.

- load: from navigation start to the viewer's first frame drawn (``data-ready-ms``), and the
  wall time of ``page.goto`` until then;
- frame: moving to each checkpoint in turn (every checkpoint once, from the one before it),
  ``setStep(i)`` and one pixel read back from each canvas, which makes Chromium finish the
  drawing. With the frame cache off and empty: one step at a time with the slider at rest in
  between (``single``: drawn in full resolution), then in quick succession (``cold``: scrubbing,
  each frame drawn from scratch at half resolution, the full one following when the slider
  rests). Then after the viewer pre-rendered the checkpoints while idle (``warm``: the edge
  layer is a cached image; what a researcher gets scrubbing back and forth), and warm again
  until the next animation frame (``painted``, quantised by the 60 Hz frame clock). Median and
  p95 over all checkpoints, in the default view (whole weight graph, coloured by sign) and
  coloured by status (draws the dying edges too), and, where the run was analysed
  (``sparsecircuits analyze``: the page then has its time panel, whose cursor every frame
  moves), by sign with the oscillating weights highlighted (``sign+oscillating``).

Targets on the 2-core machine: the demo page loads in <= 2 s; frames <= 50 ms at both sizes,
16 ms at the demo size to reach for. Not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sparsecircuits.circuits.graph import site_widths, weight_sites
from sparsecircuits.circuits.layout import layout
from sparsecircuits.circuits.timeline import Elements
from sparsecircuits.config import ModelConfig
from sparsecircuits.metrics import LossMatrix
from sparsecircuits.viewer import _browser
from sparsecircuits.viewer.bundle import as_run, encode
from sparsecircuits.viewer.page import page_html

MEASURE = """async () => {
  const v = document.querySelector('.scv');
  const api = v.scv;
  const T = api.timeline.T;
  const order = [...Array(T).keys()].slice(1).concat([0]);
  const pass = async (painted) => {
    const times = [];
    for (const i of order) {
      const t0 = performance.now();
      api.setStep(i);
      if (painted) await new Promise((r) => requestAnimationFrame(() => r()));
      else api.flush();
      times.push(performance.now() - t0);
    }
    return times;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const out = {};
  const variants = [['sign', false], ['status', false]];
  if (api.timeline.a.oscillating_edge?.length) variants.push(['sign', true]);
  for (const [colour, oscillating] of variants) {
    api.set({color_by: colour, oscillating, prerender: false});
    api.clearCache();
    const single = [];
    for (const i of order) {  // one step at a time, the slider at rest in between
      await sleep(320);
      const t0 = performance.now();
      api.setStep(i);
      api.flush();
      single.push(performance.now() - t0);
    }
    api.clearCache();
    await sleep(320);
    const cold = await pass(false);
    api.set({prerender: true});
    await api.whenWarm();
    const warm = await pass(false);
    const painted = await pass(true);
    out[oscillating ? `${colour}+oscillating` : colour] =
      {single, cold, warm, painted, edges: +v.dataset.edgesDrawn};
  }
  return out;
}"""


def synthetic_run(folder: Path, checkpoints: int, edges: int, seed: int = 0) -> SimpleNamespace:
    """A run-like object (what the bundle reads) with a random timeline of the given size."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(d_model=256, n_layers=4, n_heads=8, d_head=16, d_mlp=1024)
    node_ids = list(layout(cfg))
    widths = site_widths(cfg)
    sites = weight_sites(cfg)
    sizes = np.array([widths[s.source] * widths[s.target] for s in sites], dtype=float)
    keys: set[tuple[str, str, str]] = set()
    kinds: dict[tuple[str, str, str], str] = {}
    while len(keys) < edges:
        for k in rng.choice(len(sites), size=edges - len(keys), p=sizes / sizes.sum()):
            site = sites[k]
            key = (f"{site.source}:{rng.integers(widths[site.source])}",
                   f"{site.target}:{rng.integers(widths[site.target])}", site.param)
            keys.add(key)
            kinds[key] = site.kind
    ordered = sorted(keys)
    present = np.zeros((edges, checkpoints), dtype=bool)
    alive = rng.random(edges) < 0.6
    for t in range(checkpoints):
        u = rng.random(edges)
        alive = np.where(alive, u > 0.03, u < 0.045)
        present[:, t] = alive
    value = np.where(present, rng.normal(0, 0.05, (edges, checkpoints)), np.nan)
    weight_graph = SimpleNamespace(
        edges=Elements(tuple(ordered), present, value, tuple({"kind": kinds[k]} for k in ordered)),
        extracted=np.ones(checkpoints, dtype=bool))
    index = {n: i for i, n in enumerate(node_ids)}
    src = np.array([index[k[0]] for k in ordered])
    dst = np.array([index[k[1]] for k in ordered])
    tasks = [f"task{i}" for i in range(6)]
    circuits = {}
    for task in tasks:
        nodes = rng.random((len(node_ids), checkpoints)) < 0.15
        induced = present & nodes[src] & nodes[dst]
        rows = np.flatnonzero(induced.any(axis=1))
        circuits[task] = SimpleNamespace(
            nodes=Elements(tuple(node_ids), nodes, np.where(nodes, rng.random(nodes.shape), np.nan),
                           tuple({} for _ in node_ids)),
            edges=Elements(tuple(ordered[r] for r in rows), induced[rows], value[rows],
                           tuple({} for _ in rows)),
            extracted=np.ones(checkpoints, dtype=bool),
            attrs=tuple({"solved": True, "loss_full": 0.1, "loss_circuit": 0.12}
                        for _ in range(checkpoints)))
    per = 5
    blocks = np.arange(checkpoints) // per
    sources = tuple(tasks[b % len(tasks)] for b in blocks)
    timeline = SimpleNamespace(
        steps=np.arange(checkpoints) * 10 + 9, cycles=blocks // len(tasks), blocks=blocks,
        positions=blocks % len(tasks), sources=sources, weight_graph=weight_graph,
        circuits=circuits)
    rows = np.flatnonzero(np.append(blocks[1:] != blocks[:-1], True))
    loss = np.abs(rng.normal(0.4, 0.2, (len(rows), len(tasks))))
    matrix = LossMatrix(timeline.steps[rows], timeline.cycles[rows], blocks[rows],
                        timeline.positions[rows], tuple(sources[r] for r in rows), tuple(tasks),
                        loss)
    return SimpleNamespace(path=folder, config=SimpleNamespace(model=cfg),
                           timeline=lambda: timeline, loss_matrix=lambda: matrix)


def stats(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "max": float(np.max(values))}


def measure(b, page_path: Path) -> dict:
    page, log = _browser.offline_page(b, width=1500, height=1000)
    start = time.perf_counter()
    page.goto(page_path.as_uri())
    page.wait_for_selector(".scv[data-ready='1']", timeout=120_000)
    wall = time.perf_counter() - start
    ready_ms = float(page.locator(".scv").get_attribute("data-ready-ms"))
    frames = page.evaluate(MEASURE)
    page.context.close()
    if log["requests"] or log["errors"] or log["failed"]:
        raise RuntimeError(f"the page was not clean: {log}")
    return {"load_ms": ready_ms, "load_wall_s": wall,
            "frames": {c: {name: stats(f[name]) for name in ("single", "cold", "warm", "painted")}
                       for c, f in frames.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", help="an extracted run (the demo run)")
    parser.add_argument("--checkpoints", type=int, default=100)
    parser.add_argument("--edges", type=int, default=120_000)
    parser.add_argument("--json", default="benchmarks/results/viewer_bench.json")
    args = parser.parse_args(argv)
    if _browser.available():
        sys.exit(f"viewer_bench: {_browser.available()}")
    results = {}
    with tempfile.TemporaryDirectory() as scratch, _browser.browser() as b:
        scratch = Path(scratch)
        cases = []
        if args.run_dir:
            run = as_run(args.run_dir)
            cases.append(("demo", run, Path(run.path).name))
        folder = scratch / "synthetic"
        folder.mkdir()
        cases.append((f"synthetic {args.checkpoints}x{args.edges}",
                      synthetic_run(folder, args.checkpoints, args.edges), "synthetic"))
        for name, run, title in cases:
            start = time.perf_counter()
            bundle = encode(run)
            encode_s = time.perf_counter() - start
            page = scratch / f"{title}.html"
            page.write_text(page_html(bundle, title), encoding="utf-8")
            header = json.loads(bundle[12:12 + int.from_bytes(bundle[8:12], "little")])
            result = {"checkpoints": header["counts"]["checkpoints"],
                      "union_edges": header["counts"]["edges"],
                      "edges_per_checkpoint_mean": float(np.mean(
                          header["checkpoints"]["edge_counts"])),
                      "bundle_bytes": len(bundle), "page_bytes": page.stat().st_size,
                      "time_panel": header["time"]["missing"] or "drawn",
                      "encode_s": encode_s, **measure(b, page)}
            results[name] = result
            f = result["frames"]
            print(f"{name}: {result['checkpoints']} checkpoints, {result['union_edges']:,} "
                  f"union edges ({result['edges_per_checkpoint_mean']:,.0f} per checkpoint); "
                  f"bundle {len(bundle) / 1e6:.2f} MB, page {result['page_bytes'] / 1e6:.2f} MB; "
                  f"load {result['load_ms']:.0f} ms (goto {result['load_wall_s']:.2f} s); "
                  f"time panel: {result['time_panel']}")
            for colour, frame in f.items():
                one, c = frame["single"], frame["cold"]
                w, p = frame["warm"], frame["painted"]
                print(f"  frame (ms, median / p95), colour by {colour}: one step, full "
                      f"resolution {one['median']:.1f} / {one['p95']:.1f}; scrubbing, first "
                      f"visit {c['median']:.1f} / {c['p95']:.1f}; scrubbing, pre-rendered "
                      f"{w['median']:.1f} / {w['p95']:.1f}; to the next paint "
                      f"{p['median']:.1f} / {p['p95']:.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
