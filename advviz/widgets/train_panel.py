"""TrainPanel: train or retrain a zoo model from a cell without freezing the notebook."""

from __future__ import annotations

import copy
import functools
import html
import time
from typing import Any

import ipywidgets as W
import torch

from advviz import data, models, train
from advviz.widgets import _render as R
from advviz.widgets._errors import ErrorArea, guarded
from advviz.widgets._jobs import Job, JobRunner
from advviz.widgets._state import DATASET_SHAPES, ExplorerState, available_datasets, dataset_classes

__all__ = ["TrainPanel"]

CURRENT = "current model (fine-tune a copy)"
# image side of each dataset the Train tab offers (architectures take any channel count)
DATASET_SIDE = {name: shape[1:] for name, shape in DATASET_SHAPES.items()}


@functools.lru_cache(maxsize=1)
def architecture_sizes() -> dict[str, tuple[int, int]]:
    """``{architecture: (H, W) it takes}`` for every registered architecture (built once, untrained:
    about 1.4 s on a 2-core CPU, mostly MobileNetV2)."""
    return {name: tuple(models.create(name).input_size[1:]) for name in models.list_models()}


def fitting_architectures(dataset: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """``(architectures that take the dataset's images, {the others: the size they take})``."""
    side = DATASET_SIDE.get(dataset)
    sizes = architecture_sizes()
    fits = [a for a, hw in sizes.items() if side is None or hw == side]
    return fits, {a: hw for a, hw in sizes.items() if a not in fits}


class _Progress:
    """``advviz.train.fit`` callback: feeds the panel and relays its Stop button (the job's stop flag)."""

    def __init__(self, panel: TrainPanel, job: Job) -> None:
        self.panel = panel
        self.job = job
        self._last = 0.0

    def on_train_begin(self, state: Any) -> None:
        self.panel._fit_state = state

    def on_batch_end(self, state: Any) -> None:
        p = self.panel
        p.batch_losses.append(state.loss)
        if self.job.stop_requested():
            state.request_stop()
        now = time.perf_counter()
        if now - self._last > 0.25:  # do not flood the front end
            self._last = now
            done = (state.epoch - 1) * state.batches_per_epoch + state.batch
            p.progress.value = done
            p.status.value = (f"epoch {state.epoch}/{state.epochs}, batch {state.batch}/{state.batches_per_epoch}, "
                              f"loss {state.loss:.4f}")

    def on_epoch_end(self, state: Any) -> None:
        p = self.panel
        p.progress.value = state.epoch * state.batches_per_epoch
        p.history = list(state.history)
        p.plot.value = R.history_svg(p.history, batch_losses=p.batch_losses)
        h = state.history[-1]
        extra = f", held-out accuracy {h['val_accuracy']:.3f}" if "val_accuracy" in h else ""
        p.status.value = f"epoch {h['epoch']}: loss {h['loss']:.4f}, accuracy {h['accuracy']:.3f}{extra}"


class TrainPanel(W.VBox):
    """Epochs, learning rate, batch size and training-set size controls; Start/Stop; a live plot.

    Start runs :func:`advviz.train.fit` on a *copy* through the widgets' job runner
    (:mod:`advviz.widgets._jobs`; in a background thread), with a callback that updates the
    progress bar and loss/accuracy plot and relays Stop as ``state.request_stop()`` (fit then
    keeps the last complete epoch). When training ends with at least one complete epoch, the
    trained model is offered, not swapped in: "Use this model" (:meth:`use_model`) makes it the
    explorer's model, so a model the user picked meanwhile is never replaced without a word.

    Args:
        state: the shared :class:`ExplorerState`.
        arch: ``None`` (fine-tune a copy of the current model) or an architecture name.
        dataset: training dataset (default: the current model's, when available).
        epochs, lr, batch_size: fit's options.
        train_images: number of training images drawn (seeded); 0 = the whole split.
        seed: fit's and the subset's seed.
        background: train in a worker thread (``False``: in the calling thread).
    """

    def __init__(self, state: ExplorerState, *, arch: str | None = None, dataset: str | None = None,
                 epochs: int = 2, lr: float = 1e-3, batch_size: int = 64, train_images: int = 1000,
                 seed: int = 0, background: bool = True) -> None:
        self.state = state
        self.errors = ErrorArea()
        self.seed = seed
        self.history: list[dict[str, float]] = []
        self.batch_losses: list[float] = []
        self.result: Any = None
        #: the model the last run trained, with what the explorer needs to use it (``None``: nothing to use)
        self.trained: dict[str, Any] | None = None
        self._fit_state: Any = None
        self.jobs = JobRunner(self, background=background, name="advviz-train")
        names = available_datasets()
        ds = dataset or state.dataset or "digits"
        self.dataset = W.Dropdown(options=names, value=ds if ds in names else "digits", description="dataset",
                                  layout=W.Layout(width="220px"))
        fits, _ = fitting_architectures(self.dataset.value)
        if arch is not None and arch not in fits:
            known = models.list_models()
            raise ValueError(f"{arch!r} does not take {self.dataset.value} images; choose one of {', '.join(fits)}"
                             if arch in known else f"unknown architecture {arch!r}; choose one of {', '.join(known)}")
        self.arch = W.Dropdown(options=[CURRENT] + fits, value=arch or CURRENT,
                               description="model", layout=W.Layout(width="340px"))
        self.arch_note = W.HTML()
        self.arch_note.add_class("advviz-arch-note")
        self._offer_architectures()
        self.dataset.observe(lambda _change: self._offer_architectures(), names="value")
        self.epochs = W.IntSlider(value=epochs, min=1, max=50, description="epochs", continuous_update=False)
        self.lr = W.FloatLogSlider(value=lr, base=10, min=-5, max=0, step=0.1, description="learning rate",
                                   readout_format=".1e", style={"description_width": "initial"})
        self.batch_size = W.Dropdown(options=[16, 32, 64, 128, 256], value=batch_size, description="batch size",
                                     style={"description_width": "initial"}, layout=W.Layout(width="200px"))
        self.train_images = W.IntText(value=train_images, description="train images (0 = all)",
                                      style={"description_width": "initial"}, layout=W.Layout(width="260px"))
        self.start_button = W.Button(description="Start", icon="play", button_style="success")
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="warning", disabled=True)
        self.use_button = W.Button(description="Use this model", icon="check", button_style="primary", disabled=True,
                                   tooltip="make the model trained here the explorer's model")
        self.use_button.add_class("advviz-train-use")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress", layout=W.Layout(width="420px"))
        self.status = W.HTML()
        self.plot = W.HTML(R.placeholder_html("the loss and accuracy curves appear here once training starts", 180)
                           .replace("width:178px", "width:420px;max-width:100%"))
        self.plot.add_class("advviz-train-plot")
        self.start_button.on_click(self._on_start)
        self.stop_button.on_click(self._on_stop)
        self.use_button.on_click(self._on_use)
        state.observe(self._on_model, "model")
        super().__init__(children=[
            R.row(self.arch, self.dataset),
            self.arch_note,
            R.row(self.epochs, self.lr),
            R.row(self.batch_size, self.train_images),
            R.row(self.start_button, self.stop_button, self.progress, self.use_button),
            self.status,
            self.plot,
            self.errors,
        ])

    def _offer_architectures(self) -> None:
        """Offer only the architectures that take the chosen dataset's images; say why the others are not."""
        fits, others = fitting_architectures(self.dataset.value)
        keep = self.arch.value if self.arch.value in fits else CURRENT
        self.arch.options = [CURRENT] + fits
        self.arch.value = keep
        if not others:
            self.arch_note.value = ""
            return
        by_size: dict[tuple[int, int], list[str]] = {}
        for a, hw in others.items():
            by_size.setdefault(hw, []).append(a)
        side = "x".join(map(str, DATASET_SIDE.get(self.dataset.value, ())))
        parts = "; ".join(f"{', '.join(names)} take {h}x{w} images" for (h, w), names in sorted(by_size.items()))
        self.arch_note.value = (f"<span style='color:#666'>Not offered for {html.escape(self.dataset.value)} "
                                f"({side} images): {html.escape(parts)}.</span>")

    @property
    def running(self) -> bool:
        """Whether training is in progress."""
        return self.jobs.running

    def wait(self, timeout: float | None = None) -> bool:
        """Block until training finished and its thread is joined; ``False`` on timeout."""
        return self.jobs.wait(timeout)

    def _prepare(self) -> tuple[torch.nn.Module, Any, Any, str]:
        ds = self.dataset.value
        train_set = data.load(ds, "train")
        test = data.load(ds, "test")
        n = int(self.train_images.value)
        if n < 0:
            raise ValueError("train images must be 0 (all) or a positive number")
        if 0 < n < len(train_set):
            perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(self.seed))
            train_set = train_set.subset(perm[:n])
        val = test.subset(torch.arange(min(500, len(test))))
        shape = tuple(train_set.image_shape)
        if self.arch.value == CURRENT:
            model = copy.deepcopy(self.state.model)
            name = f"{self.state.model_name} + fine-tuned on {ds}"
        else:
            model = models.create(self.arch.value, in_channels=shape[0], num_classes=len(train_set.classes))
            name = f"{self.arch.value} trained here on {ds}"
        want = tuple(getattr(model, "input_size", shape))
        if want != shape:
            raise ValueError(f"{self.arch.value if self.arch.value != CURRENT else self.state.model_name} takes "
                             f"{'x'.join(map(str, want))} images but {ds} has {'x'.join(map(str, shape))}; "
                             "choose a matching dataset (lenet5: digits or mnist; resnet/vgg/mobilenet: cifar10)")
        return model, train_set, val, name

    def start(self) -> None:
        """Start training (as the Start button does): in a background thread unless ``background=False``."""
        if self.running:
            raise RuntimeError("training is already running; press Stop first")
        model, train_data, val, name = self._prepare()
        self.errors.clear()
        self.history, self.batch_losses, self.result, self.trained = [], [], None, None
        self.use_button.disabled = True
        epochs, lr, bs = int(self.epochs.value), float(self.lr.value), int(self.batch_size.value)
        steps = -(-len(train_data) // bs)
        self.progress.max = epochs * steps
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.status.value = f"training {html.escape(name)} on {len(train_data)} images…"
        self.plot.value = R.history_svg([])
        self.start_button.disabled = True
        self.stop_button.disabled = False
        inputs = {"model": model, "data": train_data, "name": name, "dataset": self.dataset.value,
                  "classes": list(getattr(train_data, "classes", None) or dataset_classes(self.dataset.value)),
                  "recipe": (f"{len(train_data)} {self.dataset.value} train images, lr {lr:g}, batch {bs}, "
                             f"seed {self.seed}"),
                  "fit": dict(epochs=epochs, lr=lr, batch_size=bs, val_data=val, device=self.state.device,
                              seed=self.seed, progress=False, description="TrainPanel")}
        self.jobs.start(self._train, name=name, inputs=inputs, depends=(), done=self._trained, failed=self._failed,
                        ended=self._ended)

    def stop(self) -> None:
        """Ask training to stop after the current batch; the last complete epoch is kept."""
        self.jobs.stop()
        self.stop_button.disabled = True
        self.status.value += " — stopping after this batch…"

    def use_model(self) -> None:
        """Make the model the last run trained the explorer's model (as "Use this model" does)."""
        t = self.trained
        if t is None:
            raise RuntimeError("no trained model to use yet: press Start and let at least one epoch complete")
        self.state.set_model(t["model"], name=t["name"], classes=t["classes"], dataset=t["dataset"],
                             provenance=t["provenance"])
        self.use_button.disabled = True
        self.status.value = f"the explorer now uses {html.escape(t['name'])}"

    def _train(self, job: Job) -> Any:
        """The work (worker thread): fit the copy the job started with."""
        inp = job.inputs
        self.result = train.fit(inp["model"], inp["data"], callbacks=[_Progress(self, job)], **inp["fit"])
        return self.result

    def _trained(self, job: Job, r: Any) -> None:
        inp = job.inputs
        if r.epochs_completed > 0:
            name = f"{inp['name']} ({r.epochs_completed} ep)"
            self.trained = {"model": inp["model"].eval(), "name": name, "classes": inp["classes"],
                            "dataset": inp["dataset"],
                            "provenance": (f"trained in the Train tab: {r.epochs_completed} epoch(s) on "
                                           f"{inp['recipe']}")}
            self.use_button.disabled = False
            self.progress.bar_style = "success" if not r.interrupted else "warning"
            self.status.value = (f"{'stopped; kept' if r.interrupted else 'done:'} {r.epochs_completed} complete "
                                 f"epoch(s) (held-out accuracy {r.last.get('val_accuracy', float('nan')):.3f}). "
                                 f"The explorer still uses {html.escape(self.state.model_name)}: press "
                                 "<b>Use this model</b> to explore the one trained here.")
        else:
            self.progress.bar_style = "warning"
            self.status.value = "stopped before the first epoch completed; there is no trained model to use"

    def _failed(self, job: Job, exc: BaseException) -> None:
        self.progress.bar_style = "danger"
        self.status.value = "training failed"

    def _ended(self, job: Job) -> None:
        self.start_button.disabled = False
        self.stop_button.disabled = True

    @guarded
    def _on_model(self, state: ExplorerState) -> None:
        ds = state.dataset
        if not self.running and ds and ds in self.dataset.options and ds != self.dataset.value:
            self.dataset.value = ds  # train on the data the current model takes

    @guarded
    def _on_start(self, _button: W.Button | None = None) -> None:
        self.start()

    @guarded
    def _on_stop(self, _button: W.Button | None = None) -> None:
        self.stop()

    @guarded
    def _on_use(self, _button: W.Button | None = None) -> None:
        self.use_model()
