"""``CircuitViewer``: the circuit viewer as a Jupyter widget (anywidget).

The run's bundle goes to the browser once, as one binary buffer (the ``bundle`` trait); the
front end is the package's own ES module (``static/viewer.js``), so nothing is fetched from a
CDN. Synced state: ``step_index``, ``threshold``, ``view`` ("weights" or "circuits"), ``tasks``
(the circuits shown), ``color_by`` ("sign" or "status"), ``selected`` (pinned node ids) and
``oscillating`` (highlight the weights that oscillate with the cycle; the bundle carries them
and the rest of the time panel when the run was analysed: ``sparsecircuits analyze``).
The browser asks for an ablation with the custom message
``{"type": "ablate", "step_index": i, "nodes": [...]}``; the widget answers with
:meth:`CircuitViewer.ablation_message`.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

from sparsecircuits.viewer.bundle import as_run, build_bundle, decode
from sparsecircuits.viewer.page import module_source


class CircuitViewer(anywidget.AnyWidget):
    """A run's weight graph and task circuits through its checkpoints (see module doc).

    ``CircuitViewer(run)`` opens on the whole weight graph, ``CircuitViewer(run, task="quote")``
    (or a list of tasks) on those circuits. ``method`` is how "ablate" replaces the pinned
    nodes (``mean`` over the task's own prompts, ``zero`` or ``resample``).
    """

    _esm = module_source()
    bundle = traitlets.Bytes().tag(sync=True)
    step_index = traitlets.Int(0).tag(sync=True)
    threshold = traitlets.Float(0.0).tag(sync=True)
    view = traitlets.Unicode("weights").tag(sync=True)
    tasks = traitlets.List(traitlets.Unicode()).tag(sync=True)
    color_by = traitlets.Unicode("sign").tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)
    can_ablate = traitlets.Bool(True).tag(sync=True)
    oscillating = traitlets.Bool(False).tag(sync=True)

    def __init__(self, run: Any, task: str | list[str] | None = None, *,
                 method: str = "mean", **kwargs: Any) -> None:
        run = as_run(run)
        data = build_bundle(run)
        header = decode(data).header
        tasks = [task] if isinstance(task, str) else list(task or [])
        known = [t["name"] for t in header["tasks"]]
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ValueError(f"no circuits of {unknown} in {run.path}; extracted: {known}")
        kwargs.setdefault("view", "circuits" if tasks else "weights")
        super().__init__(bundle=data, tasks=tasks, **kwargs)
        self._run = run
        self._header = header
        self.method = method
        self.on_msg(self._on_custom_msg)

    @traitlets.validate("step_index")
    def _valid_step(self, proposal: dict[str, Any]) -> int:
        return max(0, min(int(proposal["value"]), len(self.steps) - 1))

    @property
    def steps(self) -> list[int]:
        """The checkpoints' training steps, by ``step_index``."""
        return self._header["checkpoints"]["steps"]

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self._header["tasks"]]

    def ablate(self, nodes: list[str], step_index: int | None = None,
               tasks: list[str] | None = None) -> dict[str, dict[str, float]]:
        """Each task's loss at a checkpoint with and without ``nodes`` ablated:
        ``{task: {"loss", "ablated", "delta"}}`` (nodes without a hook point are skipped)."""
        return self.ablation_message({"nodes": nodes, "step_index": step_index},
                                     tasks)["results"]

    def ablation_message(self, request: dict[str, Any], tasks: list[str] | None = None
                         ) -> dict[str, Any]:
        """The answer to an "ablate" request (see module doc)."""
        from sparsecircuits.circuits.ablate import ablate, evaluate
        from sparsecircuits.circuits.graph import split_node

        index = request.get("step_index")
        index = self.step_index if index is None else int(index)
        step = int(self.steps[index])
        nodes = [str(n) for n in request.get("nodes", [])]
        model = self._run.model(step)  # the Run caches the last few
        hooked = [n for n in nodes if split_node(n)[0] in model.hook_points]
        skipped = [n for n in nodes if n not in hooked]
        results = {}
        for task in tasks or self.task_names:
            loss, _ = evaluate(model, task)
            with ablate(model, hooked, method=self.method, reference=task):
                ablated, _ = evaluate(model, task)
            results[task] = {"loss": loss, "ablated": ablated, "delta": ablated - loss}
        return {"type": "ablation", "step_index": index, "step": step, "method": self.method,
                "nodes": nodes, "skipped": skipped, "results": results}

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "ablate":
            return
        try:
            reply = self.ablation_message(content)
        except Exception as err:  # the browser shows it; the kernel keeps running
            reply = {"type": "ablation", "step_index": content.get("step_index"),
                     "error": f"{type(err).__name__}: {err}"}
        self.send(reply)
