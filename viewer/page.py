"""The standalone page: the viewer's ES module and a run's bundle inlined into one HTML file.

It works from disk with the network off: no request leaves the page (the bundle is base64 in a
``<script>`` element, the code is the widget's own module). A small model shim stands in for
the widget model, and without Python behind it the page shows each pinned node's stored
importance instead of ablating it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from sparsecircuits.viewer.bundle import as_run, build_bundle, files_of

STATIC = Path(__file__).parent / "static"


def module_source() -> str:
    """The viewer's ES module (the widget's front end)."""
    return (STATIC / "viewer.js").read_text(encoding="utf-8")


_SHIM = """
const bytes = Uint8Array.from(atob(document.getElementById("scv-bundle").textContent.trim()),
  (c) => c.charCodeAt(0));
const state = Object.assign({bundle: bytes, step_index: 0, threshold: 0, view: "weights",
  tasks: [], color_by: "sign", selected: [], can_ablate: false, oscillating: false}, STATE);
const handlers = new Map();
const model = {
  get: (name) => state[name],
  set(name, value) {
    if (JSON.stringify(state[name]) === JSON.stringify(value)) return;
    state[name] = value;
    for (const fn of handlers.get(`change:${name}`) || []) fn();
  },
  save_changes() {},
  on(name, fn) { if (!handlers.has(name)) handlers.set(name, []); handlers.get(name).push(fn); },
  off(name, fn) { const list = handlers.get(name) || []; const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1); },
  send() {},
};
render({model, el: document.getElementById("app")});
"""


def page_html(bundle: bytes, title: str, state: dict[str, Any] | None = None) -> str:
    """One self-contained HTML page showing ``bundle`` (see module doc)."""
    code = module_source() + "\nconst STATE = " + json.dumps(state or {}) + ";\n" + _SHIM
    code = code.replace("</", "<\\/")
    data = base64.b64encode(bundle).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: circuits over checkpoints</title>
<style>body {{ margin: 0; background: #fff; }} #app {{ max-width: 1700px; }}</style>
</head>
<body>
<div id="app"></div>
<script type="application/octet-stream" id="scv-bundle">
{data}
</script>
<script type="module">
{code}
</script>
</body>
</html>
"""


def export_html(run: Any, path: str | Path | None = None, *, task: str | list[str] | None = None
                ) -> Path:
    """Write the run's viewer as one self-contained HTML file (default: ``viewer.html`` in the
    run's viewer folder) and return its path. ``task`` opens the page on that task's circuit
    (or several).
    """
    run = as_run(run)
    path = Path(path) if path is not None else files_of(run).page
    tasks = [task] if isinstance(task, str) else list(task or [])
    state = {"tasks": tasks, "view": "circuits"} if tasks else {}
    text = page_html(build_bundle(run), Path(run.path).name, state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
