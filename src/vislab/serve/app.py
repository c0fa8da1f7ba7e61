"""``vislab serve``: a FastAPI app around one model, batched, bounded, with metrics and a web page.

The model named on the command line is the only one it ever loads: no endpoint takes a
model, a path or a URL. It loads in the background after the server starts; ``/health``
answers 503 until the model is loaded and one warm-up forward has run, then 200. A model that
cannot be loaded stops ``vislab serve`` with the reason, as ``vislab predict`` fails.

Endpoints: ``POST /v1/predict`` (multipart ``file`` / ``files`` or a raw ``image/*`` body:
the JSON list of ``vislab predict --format json``), ``POST /v1/explain`` (Grad-CAM overlay
PNG), ``POST /v1/segment`` (per-pixel tasks: mask PNG + class shares), ``GET /health``,
``GET /v1/info``, ``GET /metrics`` (Prometheus text), ``GET /docs`` (Swagger UI from
fastapi-offline's bundled files, no CDN), ``/redoc`` and ``/openapi.json``,
``GET /`` (the web page). Errors are ``{"error": {"code", "message"}}`` with the codes in
:data:`vislab.serve.uploads.ERROR_STATUS`.

Example:
    >>> from fastapi.testclient import TestClient                      # doctest: +SKIP
    >>> with TestClient(create_app("runs/digits")) as client:           # doctest: +SKIP
    ...     client.post("/v1/predict", files={"file": open("3.png", "rb")}).json()
    [{'file': '3.png', 'top': [{'class': '3', 'index': 3, 'probability': 0.98}, ...]}]
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from vislab.core.errors import ConfigError, UserError
from vislab.serve.batching import Batcher, QueueFull
from vislab.serve.uploads import ApiError, decode_image, request_images

log = logging.getLogger("vislab.serve")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    """The server's settings; each limit has a safe default (``vislab serve --help``)."""

    device: str = "auto"
    precision: str = "auto"  # chosen as `vislab predict` chooses it
    top_k: int = 5
    batch_size: int = 32  # dynamic batching: most images per forward (1: no batching)
    max_wait_ms: float = 5.0  # how long a first image waits for others
    max_body_mb: float = 10.0
    max_pixels: int = 40_000_000
    max_images: int = 16  # per request
    max_queue: int = 256  # images waiting; beyond it 503 + Retry-After
    timeout: float = 30.0  # seconds per request
    weights: str | None = None  # local weights for the model (--weights), read once at start-up

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def load_predictor(spec, device: str = "auto", precision: str = "auto", weights=None):
    """A predictor for a run folder, ``imagenet:NAME``, an exported ``.onnx`` file, or a model already
    loaded in this process (a :class:`vislab.runs.Loaded`)."""
    from vislab.export.ort import OnnxPredictor, is_onnx_path
    from vislab.infer import Predictor
    from vislab.runs import Loaded, load

    if isinstance(spec, Loaded):
        return Predictor(spec, device=device, precision=precision)
    if is_onnx_path(spec):
        return OnnxPredictor(spec)
    return Predictor(load(spec, weights=weights), device=device, precision=precision)


def check_model_spec(spec) -> None:
    """Refuse a model that cannot be served before the server starts (cheap checks only)."""
    from vislab.export.ort import is_onnx_path
    from vislab.runs import RunError, read_spec

    text = str(spec)
    if is_onnx_path(text):
        if not Path(text).is_file():
            raise RunError(f"{text}: no such ONNX file; make one with `vislab export RUN --out {text}`")
    elif not text.startswith(("imagenet:", "hf:")):  # those two are checked as they load
        read_spec(Path(text))


class _Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()  # per app: two apps in one process never share counts
        self.requests = Counter("vislab_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("vislab_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("vislab_batch_images", "images per forward", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.errors = Counter("vislab_errors", "error responses by code", ["code"], registry=self.registry)
        self.queue = Gauge("vislab_queue_images", "images waiting for a forward", registry=self.registry)


def create_app(spec, config: ServeConfig | None = None, on_load_error: Callable[[Exception], None] | None = None):
    """The FastAPI app serving ``spec``: a run folder, ``imagenet:NAME``, ``MODEL.onnx``, or a
    :class:`vislab.runs.Loaded` built in Python (it is the only model the app ever uses).

    A model that cannot be loaded leaves the app answering 503 with the reason on /health, and logged;
    ``on_load_error(exc)`` is called instead of the log line (``vislab serve`` stops with the error)."""
    from vislab.serve.page import PAGE

    config = config or ServeConfig()
    label = spec if isinstance(spec, (str, Path)) else getattr(spec, "spec", {}).get("name", "model")
    metrics = _Metrics()
    batcher = Batcher(max_batch=config.batch_size, max_wait=config.max_wait_ms / 1000.0,
                      max_queue=config.max_queue, on_batch=metrics.batch.observe)
    state = {"ready": False, "error": None, "predictor": None, "loaded_at": None}

    def load_and_warm():
        try:
            predictor = load_predictor(spec, config.device, config.precision, config.weights)
            channels, height, width = predictor.preprocessing.input_size
            predictor.outputs(torch.zeros(1, channels, height, width, dtype=torch.uint8))  # warm-up forward
            batcher.predictor = predictor
            state["predictor"], state["loaded_at"] = predictor, time.time()
            state["ready"] = True
            log.info("model %s ready", label)
        except Exception as exc:  # reported by /health, and by the log or the caller's hook
            state["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)
            if on_load_error is not None:
                on_load_error(exc)
            else:
                log.error("cannot load %s: %s", label, state["error"])

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        loading = batcher.call(load_and_warm)  # in the inference thread; requests see 503 meanwhile
        task = asyncio.ensure_future(loading)
        yield
        task.cancel()
        await batcher.stop()

    app = FastAPIOffline(title="vislab serve", version="1", lifespan=lifespan,
                         description=f"Predictions from {label}. Errors: {{\"error\": {{\"code\", \"message\"}}}}.")

    def error_response(exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        metrics.errors.labels(exc.code).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_parameter")
        return error_response(ApiError(code, f"{request.method} {request.url.path}: {exc.detail}"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        shown = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error_response(ApiError("invalid_parameter", shown))

    @app.exception_handler(Exception)
    async def _internal_error(request, exc):
        log.exception("internal error on %s", request.url.path)
        return error_response(ApiError("internal_error", f"{type(exc).__name__}: {exc}"))

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        if request.url.path == "/redoc":  # ReDoc's bundled script draws Redocly's logo from its CDN: images
            response.headers["Content-Security-Policy"] = "img-src 'self' data:"  # from here only
        return response

    def predictor():
        if state["error"]:
            raise ApiError("not_ready", f"the model could not be loaded: {state['error']}")
        if not state["ready"]:
            raise ApiError("not_ready", "the model is still loading; retry shortly", retry_after=1)
        return state["predictor"]

    async def decoded(request: Request, one: bool = False):
        """The request's images; ``one``: an endpoint that answers for one image (explain, segment)."""
        limit = (f"{request.url.path} answers for one image; send each image in its own request" if one else
                 "vislab serve --max-images")
        pairs = await request_images(request, config.max_body, 1 if one else config.max_images, limit)
        out = []
        for name, data in pairs:
            try:
                if len(data) > 256 * 1024:  # big files decode off the event loop
                    image = await asyncio.to_thread(decode_image, data, name, config.max_pixels)
                else:
                    image = decode_image(data, name, config.max_pixels)
                out.append((name, image, None))
            except ApiError as exc:
                if len(pairs) == 1:
                    raise
                out.append((name, None, exc))  # a bad file among good ones: reported, the rest go on
        if all(error is not None for _, _, error in out):
            raise out[0][2]
        return out

    async def outputs_for(images: list[torch.Tensor]) -> list[torch.Tensor]:
        metrics.queue.set(batcher.pending)
        try:
            return await asyncio.wait_for(batcher.submit(images), config.timeout)
        except QueueFull as exc:
            raise ApiError("queue_full", f"the server is busy ({exc}); retry after a second", retry_after=1) \
                from None
        except (TimeoutError, asyncio.TimeoutError):
            raise ApiError("timeout", f"no answer within {config.timeout:g} s (vislab serve --timeout)") from None

    def known_query(request: Request, *names: str) -> None:
        """An unknown query parameter (a typo, or one of `vislab predict`'s flags the server does not take)
        is refused naming it and the closest known one, not ignored."""
        import difflib

        for given in request.query_params:
            if given in names:
                continue
            close = difflib.get_close_matches(given.replace("-", "_"), names, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            takes = ", ".join(names) if names else "none"
            note = (" (the served model's decision thresholds are its own: a multi-label run's tuned ones in "
                    "model.json)" if given == "threshold" else "")
            raise ApiError("invalid_parameter", f"{request.method} {request.url.path}: unknown query parameter "
                                                f"{given!r}{hint}; it takes: {takes}{note}")

    def top_k_of(value):
        return value if value is not None else config.top_k

    @app.get("/health", summary="200 once the model is loaded and warmed up, else 503")
    async def health():
        if state["ready"]:
            return {"status": "ok", "model": str(label)}
        status = "error" if state["error"] else "loading"
        return JSONResponse({"status": status, "error": state["error"]}, status_code=503,
                            headers=None if state["error"] else {"Retry-After": "1"})

    @app.get("/v1/info", summary="the model, its classes, preprocessing, batching and limits, versions")
    async def info():
        p = predictor()
        from vislab.runs import versions

        loaded = p.loaded
        return {
            "model": str(label), "name": loaded.spec.get("name"), "task": p.task.name,
            "per_pixel": bool(getattr(p.task, "per_pixel", False)),
            "runtime": "onnxruntime" if getattr(loaded, "model", None) is None else "pytorch",
            "device": str(p.device), "precision": str(p.dtype).replace("torch.", "") if p.dtype else "fp32",
            "class_names": list(loaded.class_names), "preprocessing": p.preprocessing.to_dict(),
            "batching": {"max_batch": config.batch_size, "max_wait_ms": config.max_wait_ms},
            "limits": {k: v for k, v in asdict(config).items() if k.startswith("max_") or k == "timeout"},
            "explain": getattr(loaded, "model", None) is not None,
            "versions": versions(),
        }

    @app.post("/v1/predict", summary="top-k for each image (the JSON of `vislab predict --format json`)")
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, le=1000)):
        known_query(request, "top_k")
        p = predictor()
        if getattr(p.task, "per_pixel", False):  # as `vislab predict` refuses it: its answer is a mask
            raise ApiError("segmentation_model", f"this model's task is {p.task.name}: /v1/predict answers one "
                                                 "class per image, as `vislab predict` does; use /v1/segment")
        items = await decoded(request)
        good = [(name, image) for name, image, error in items if error is None]
        outputs = await outputs_for([image for _, image in good])
        answers = iter(outputs)
        names = p.loaded.class_names
        results = []
        for name, image, error in items:
            if error is not None:
                results.append({"file": name, "error": error.message, "code": error.code})
            else:
                results.append({"file": name, **p.task.describe(next(answers), names, top_k_of(top_k))})
        return results

    @app.post("/v1/explain", summary="a Grad-CAM overlay PNG of one image", response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request, target: str = Query("top", max_length=200)):
        known_query(request, "target")
        p = predictor()
        loaded = p.loaded
        if getattr(loaded, "model", None) is None:
            raise ApiError("not_supported", "Grad-CAM needs the PyTorch model; serve the run folder, not the .onnx")
        name, image, _ = (await decoded(request, one=True))[0]

        def draw():
            from vislab.explain.explainers import explain as explain_image
            from vislab.explain.targets import find_target_layer
            from vislab.viz.explain import overlay_figure, save_figure
            from vislab.viz.montage import display_size

            method = "gradcam"
            try:
                find_target_layer(loaded.model, loaded.preprocessing.input_size)
            except ValueError:
                method = "occlusion"  # no feature maps (an MLP): as the report does
            try:
                # the map at the size the PNG draws the image at, never a large photo's full size
                result = explain_image(loaded.model, loaded.preprocessing, image, method=method, target=target,
                                       class_names=loaded.class_names, task=loaded.task,
                                       size=display_size(*image.shape[-2:]))
            except ValueError as exc:  # unknown target class
                raise ApiError("invalid_parameter", str(exc)) from None
            fig = overlay_figure(image.numpy(), result.heatmap, result.title)
            buffer = io.BytesIO()
            save_figure(fig, buffer)  # as `vislab explain` writes its file
            return buffer.getvalue(), result

        png, result = await asyncio.wait_for(batcher.call(draw), config.timeout)
        return Response(png, media_type="image/png",
                        headers={"X-Class": str(result.target_name or result.target).encode("ascii", "replace")
                                 .decode(), "X-Score": f"{result.score:.6f}", "X-Method": result.method})

    @app.post("/v1/segment", summary="segmentation models: the mask PNG (base64) and the class shares")
    async def segment(request: Request):
        known_query(request)
        p = predictor()
        if not getattr(p.task, "per_pixel", False):
            raise ApiError("not_segmentation", f"this model's task is {p.task.name}; /v1/segment serves "
                                               "segmentation models (use /v1/predict)")
        name, image, _ = (await decoded(request, one=True))[0]
        # the predictor's per-pixel outputs at the image's own size, as `vislab segment` gets them
        output = (await outputs_for([image]))[0]
        from vislab.segment import mask_answer, mask_png, model_palette

        names = list(p.loaded.class_names)
        mask, counts = mask_answer(output, len(names))
        colors = model_palette(p.loaded).array(len(names))
        return {"file": name, **p.task.describe(output, names, config.top_k),
                "mask_png": base64.b64encode(mask_png(mask, colors)).decode(), "size": list(mask.shape),
                "shares": {n: float(c) / max(mask.size, 1) for n, c in zip(names, counts)},
                "palette": {n: [int(v) for v in colors[i]] for i, n in enumerate(names)}}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        metrics.queue.set(batcher.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE)

    app.state.vislab = state
    app.state.batcher = batcher
    return app


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on (bound as uvicorn binds it, SO_REUSEADDR on)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror}); "
                          "use --host 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port}: another program is listening on {host}:{port}; choose "
                                  f"another --port (e.g. --port {port + 1 if port < 65535 else 8000})") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--host {host}: not an address of this machine; use --host 127.0.0.1") from None
            raise


def run_server(spec, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve ``spec`` with uvicorn until interrupted; a non-loopback host prints a warning."""
    import uvicorn

    config = ServeConfig(**options)
    if host not in LOOPBACK:
        print(f"vislab serve: warning: listening on {host}: anyone who can reach this machine on port {port} "
              "can use the model. Put it behind an authenticating proxy, or use --host 127.0.0.1", file=sys.stderr)
    check_model_spec(spec)
    check_port_free(host, port)  # before the model is loaded, and as one line rather than uvicorn's log
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # a model that cannot be loaded (a damaged weights file, no network for imagenet:/hf:) stops the
    # server, and the command fails with the reason as predict does: nothing would ever load it later
    failed: list[Exception] = []

    def stop(exc: Exception) -> None:
        failed.append(exc)
        server.should_exit = True  # polled by uvicorn's main loop

    server = uvicorn.Server(uvicorn.Config(create_app(spec, config, on_load_error=stop), host=host, port=port,
                                           log_level="info", access_log=False, timeout_graceful_shutdown=5))
    server.run()
    if failed:
        raise failed[0]
