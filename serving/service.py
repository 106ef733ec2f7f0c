"""The BentoML scoring service: `bentoml serve serving.service:AnomalyService` (or `anomaly serve`).

Two services, two kinds of process:
- AnomalyModel owns the ONNX Runtime session. Its `infer` API is batchable, so BentoML's
  adaptive batching merges images from concurrent requests into one model call.
- AnomalyService answers HTTP (a FastAPI app mounted in BentoML): it decodes uploads, sends the
  pixels to AnomalyModel, and turns scores into p-values and decisions with the calibration the
  model server loaded. Health (/livez, /readyz) and /metrics are BentoML's own endpoints.

Configuration comes from ANOMALY_* environment variables (serving.settings). Never imports torch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from anomaly.errors import AnomalyError
from anomaly.imageio import ImageTooLargeError, UnsupportedFormatError, decoding_bytes, finish_decoding, open_image
from anomaly.runtime.bundle import OnnxDetector
from anomaly.runtime.cpus import threads_per_worker
from anomaly.runtime.heatmap import MAX_ORIGINAL_PIXELS
from anomaly.runtime.resolve import resolve_model
from serving.budget import ByteBudget
from serving.guard import RequestGuard
from serving.metrics import RequestMetrics, service_metrics
from serving.monitor import PValueMonitor
from serving.schemas import BatchScoreResponse, ErrorResponse, ImageScore, ModelDescription, ScoreResponse
from serving.scoring import DecodedUpload, HeatmapSize, ModelView, describe_loaded, pack_outputs
from serving.settings import MAX_TARGET_FPR, MIN_TARGET_FPR, ServingSettings
from serving.slow_clients import enforce_header_timeout
from serving.supervision import exit_with_parent

logger = logging.getLogger("bentoml.serve.anomaly")  # under "bentoml", whose handlers BentoML sets up
SETTINGS = ServingSettings.from_env()
enforce_header_timeout(SETTINGS.header_timeout_s)
# Both inference endpoints share one adaptive-batching policy, set by the ANOMALY_* environment.
batched_api = bentoml.api(
    batchable=SETTINGS.adaptive_batching, max_batch_size=SETTINGS.max_batch_size, max_latency_ms=SETTINGS.max_latency_ms
)
PAGE = (Path(__file__).parent / "page" / "index.html").read_text(encoding="utf-8")
UPLOAD_ROUTES = frozenset({"/score", "/score_batch"})
API_ROUTES = UPLOAD_ROUTES | {"/model", "/livez", "/readyz", "/metrics"}


class ServingError(Exception):
    """A request the service refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# BentoML's client to a dependency replaces its connection pool every `max_requests` calls or
# `max_age` seconds and drops the calls still in flight on the old one ("Server disconnected");
# under steady load that fails requests, so the pool is kept for the life of the process.
KEEP_CONNECTIONS = {"max_requests": 2**62, "max_age": 10.0**12}
READY_PROBE_S = 0.5


@bentoml.service(
    name="anomaly-model",
    workers=SETTINGS.model_workers,
    traffic={"timeout": 120},
    runner_connection=KEEP_CONNECTIONS,
)
class AnomalyModel:
    """Loads the model once (logging the version resolved) and runs ONNX Runtime on image batches."""

    def __init__(self) -> None:
        exit_with_parent()
        if not SETTINGS.model:
            raise AnomalyError("no model to serve: set ANOMALY_MODEL to a model directory or models:/NAME@ALIAS")
        self.resolved = resolve_model(SETTINGS.model)
        threads = threads_per_worker(SETTINGS.model_workers, SETTINGS.ort_threads)
        self.detector = OnnxDetector(self.resolved.directory, threads=threads)
        height, width = self.detector.image_size
        self.detector.run(np.zeros((1, height, width, self.detector.channels), dtype=np.uint8))
        logger.info(
            "serving %s version %s (weights %s) from %s with %d ONNX Runtime threads",
            self.resolved.name,
            self.resolved.version or "-",
            self.detector.calibration.model_checksum[:12],
            self.resolved.directory,
            threads,
        )

    @batched_api
    def infer(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> float32 rows of the graph's scores (pack_outputs)."""
        return pack_outputs(self.detector.run(images, self.detector.score_names))

    @batched_api
    def infer_with_maps(self, images: np.ndarray) -> np.ndarray:
        """As `infer`, each row followed by the image's flattened anomaly map (for heat maps)."""
        return pack_outputs(self.detector.run(images, (*self.detector.score_names, "anomaly_map")))

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        return describe_loaded(self.resolved, self.detector)


app = FastAPI(
    title="anomaly",
    description="Calibrated anomaly scores and heat maps for images.",
    responses={code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 503)},
)


def error_response(status: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=message, detail=detail).model_dump(exclude_none=True), status_code=status)


@app.exception_handler(ServingError)
async def serving_error(_: Request, error: ServingError) -> JSONResponse:
    return error_response(error.status, str(error))


@app.exception_handler(RequestValidationError)
async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid request: " + "; ".join(describe_problem(problem) for problem in error.errors()))


# What a bounded field takes, said whole whichever bound (or NaN) the value broke.
FIELD_RULES = {
    "target_fpr": f"must be a number from {MIN_TARGET_FPR:g} to {MAX_TARGET_FPR:g}",
    "images": f"send 1 to {SETTINGS.max_batch_images} image files (ANOMALY_MAX_BATCH_IMAGES)",
}


def describe_problem(problem: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in problem["loc"][1:]) or str(problem["loc"][0])
    if "UploadFile" in problem["msg"]:  # a text field (often a URL) where a file belongs
        return f"{field} must be an uploaded file, not text; the server does not fetch URLs"
    if field == "target_fpr":
        return f"{field}: {FIELD_RULES[field]}, not {problem.get('input')!r}"
    if field == "images" and problem["type"] in ("too_short", "too_long", "missing"):
        return f"{field}: {FIELD_RULES[field]}"
    return f"{field}: {problem['msg']}"


@app.exception_handler(StarletteHTTPException)
async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    response = error_response(error.status_code, str(error.detail))
    response.headers.update(error.headers or {})  # a 405 keeps its Allow header
    return response


TargetFpr = Annotated[
    float | None,
    Query(
        ge=MIN_TARGET_FPR,
        le=MAX_TARGET_FPR,
        allow_inf_nan=False,
        description=f"Decide at this false-positive rate instead of the calibrated one ({MIN_TARGET_FPR} to "
        f"{MAX_TARGET_FPR}).",
    ),
]
Heatmap = Annotated[bool, Query(description="Also return the anomaly map as a base64 PNG.")]
HeatmapSizeQuery = Annotated[
    HeatmapSize,
    Query(
        description=(
            "input: the map over the image at the model's input size (RGB); original: the map alone (RGBA, its "
            f"opacity in alpha) at the uploaded image's size, scaled down to at most {MAX_ORIGINAL_PIXELS:,} pixels, "
            "to lay over the upload."
        )
    ),
]


@bentoml.service(name="anomaly", workers=SETTINGS.api_workers, traffic={"timeout": 120})
@bentoml.asgi_app(app, path="/")
class AnomalyService:
    model = bentoml.depends(AnomalyModel)

    def __init__(self) -> None:
        exit_with_parent()
        self.view: ModelView | None = None
        self.monitor: PValueMonitor | None = None
        self.loading = asyncio.Lock()
        self.decoding = ByteBudget(SETTINGS.decode_budget_bytes)

    async def __is_ready__(self) -> bool:
        """Ready once the model server has described its model and answered a warm-up inference, and while it
        answers its own /readyz within READY_PROBE_S: a model worker that is restarting makes /readyz say 503 at
        once, not after BentoML's own 5 s dependency probe."""
        try:
            await self.loaded()
            return await asyncio.wait_for(self.model.is_ready(1), READY_PROBE_S)
        except Exception:  # not loaded, refused, timed out: all mean not ready
            return False

    async def loaded(self) -> ModelView:
        if self.view is not None:
            return self.view
        async with self.loading:
            if self.view is None:
                try:
                    view = ModelView.from_description(await self.model.to_async.describe())
                    height, width = view.image_size
                    await self.model.to_async.infer(np.zeros((1, height, width, view.channels), dtype=np.uint8))
                except Exception as error:  # the model server is not up yet or failed to load
                    logger.warning("model server not ready: %s", error)
                    raise ServingError(503, "the model is not loaded yet; retry when /readyz answers 200") from None
                self.monitor = PValueMonitor(view.calibration.target_fpr)
                self.view = view
        return self.view

    def watched(self) -> PValueMonitor:
        """The p-value monitor of the loaded model (made with the view, in `loaded`)."""
        if self.monitor is None:
            raise ServingError(503, "the model is not loaded yet; retry when /readyz answers 200")
        return self.monitor

    async def decode(self, view: ModelView, upload: UploadFile, index: int | None = None) -> DecodedUpload:
        """The upload's pixels at the model's input size. The header is read first: format, pixel count and the
        memory decoding will take are checked before any pixel is, and that memory is reserved from the worker's
        decoding budget, so concurrent large uploads wait their turn instead of exhausting memory together."""
        name = upload.filename or "upload"
        label = name if index is None else f"#{index} ({name})"
        try:
            image = await anyio.to_thread.run_sync(lambda: open_image(upload.file, label, SETTINGS.max_image_pixels))
            with image:
                needed = decoding_bytes(image, view.channels)
                if needed > self.decoding.limit:
                    raise ImageTooLargeError(
                        f"image {label} needs {needed / 2**20:.0f} MB to decode, above the decoding budget of "
                        f"{SETTINGS.decode_budget_mb:g} MB (ANOMALY_DECODE_BUDGET_MB)"
                    )
                async with self.decoding.reserve(needed):
                    pixels = await anyio.to_thread.run_sync(
                        lambda: finish_decoding(image, label, view.channels, view.image_size)
                    )
                return DecodedUpload(pixels, upload.filename, (image.size[1], image.size[0]))
        except ImageTooLargeError as error:
            raise ServingError(413, str(error)) from None
        except UnsupportedFormatError as error:
            raise ServingError(415, str(error)) from None
        except AnomalyError as error:
            raise ServingError(400, str(error)) from None

    async def run(
        self, view: ModelView, uploads: list[DecodedUpload], target_fpr: float | None, heatmap: HeatmapSize | None
    ) -> list[ImageScore]:
        infer = self.model.to_async.infer_with_maps if heatmap else self.model.to_async.infer
        try:
            packed = await infer(np.stack([upload.pixels for upload in uploads]))
        except Exception as error:
            logger.warning("model server failed: %s", error)
            raise ServingError(503, "the model server is unavailable or overloaded; retry") from None
        results = await anyio.to_thread.run_sync(lambda: view.score(uploads, np.asarray(packed), target_fpr, heatmap))
        metrics = service_metrics()
        metrics.observe_results([r.anomaly_score for r in results], [r.is_anomaly for r in results])
        state = self.watched().observe([r.p_combined for r in results])
        metrics.observe_monitor(view.identity.name, view.identity.version or "", state)
        return results

    @app.post("/score", response_model=ScoreResponse)
    async def score(
        self,
        request: Request,
        image: Annotated[
            UploadFile, File(description="PNG, JPEG, TIFF, BMP, WebP or PGM", json_schema_extra={"minLength": 1})
        ],
        target_fpr: TargetFpr = None,
        heatmap: Heatmap = False,
        heatmap_size: HeatmapSizeQuery = "input",
    ) -> ScoreResponse:
        """Score one image: signals, p-values, decision, and optionally the heat map."""
        started = time.perf_counter()
        sent = len((await request.form()).getlist("image"))  # the form FastAPI already parsed, not read again
        if sent > 1:
            raise ServingError(
                422, f"/score takes one 'image' field, this request has {sent}; send several images to /score_batch"
            )
        view = await self.loaded()
        (result,) = await self.run(
            view, [await self.decode(view, image)], target_fpr, heatmap_size if heatmap else None
        )
        return ScoreResponse(**result.model_dump(), model=view.identity, time_ms=(time.perf_counter() - started) * 1000)

    @app.post("/score_batch", response_model=BatchScoreResponse)
    async def score_batch(
        self,
        images: Annotated[
            list[UploadFile],
            File(
                description="Several image files, repeated field 'images'.",
                min_length=1,
                max_length=SETTINGS.max_batch_images,
            ),
        ],
        target_fpr: TargetFpr = None,
        heatmap: Heatmap = False,
        heatmap_size: HeatmapSizeQuery = "input",
    ) -> BatchScoreResponse:
        """Score several images; one result each, in upload order. One unreadable image refuses the request."""
        started = time.perf_counter()
        view = await self.loaded()
        uploads = [await self.decode(view, upload, index) for index, upload in enumerate(images)]
        results = await self.run(view, uploads, target_fpr, heatmap_size if heatmap else None)
        return BatchScoreResponse(results=results, model=view.identity, time_ms=(time.perf_counter() - started) * 1000)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        """The inspection page for people (serving/page/index.html): it calls /model and /score like any client."""
        return HTMLResponse(PAGE)

    @app.get("/model", response_model=ModelDescription)
    async def describe_model(self) -> ModelDescription:
        """Which model answers: name, version, training run, data, input spec, calibration."""
        view = await self.loaded()
        return view.describe(SETTINGS, self.watched().state())


# bentoml.service returns a Service wrapping the class; its stubs say the class itself.
AnomalyService.add_asgi_middleware(RequestMetrics, routes=API_ROUTES)  # type: ignore[attr-defined]
AnomalyService.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    api_key=SETTINGS.api_key,
    max_body_bytes=SETTINGS.max_body_bytes,
    upload_paths=UPLOAD_ROUTES,
    read_timeout_s=SETTINGS.read_timeout_s,
)
