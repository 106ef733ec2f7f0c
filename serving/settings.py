"""Service settings, read from ANOMALY_* environment variables (how `bentoml serve` and Docker pass them)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anomaly.errors import AnomalyError

ENV_PREFIX = "ANOMALY_"
# The smallest per-request target FPR: below it the decision rests on the fitted tail alone.
MIN_TARGET_FPR = 1e-4
MAX_TARGET_FPR = 0.5
# glibc's allocator raises its mmap threshold after large frees, so the buffers of a burst of large uploads end up in
# heap arenas that it never returns to the system: the API worker then stays near its peak. A fixed threshold keeps
# large buffers mapped (returned when freed) and trims the heap. Set for the server's processes unless already set.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": "262144"}


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="Model directory or models:/NAME@ALIAS (ANOMALY_MODEL).")
    api_key: str | None = Field(
        None,
        description="When set, every route but the page (/), /livez and /readyz needs 'Authorization: Bearer <key>': "
        "/metrics and the API description (/docs, /docs.json) included.",
    )
    max_body_mb: float = Field(20.0, gt=0, description="Larger request bodies get 413.")
    max_image_pixels: int = Field(40_000_000, gt=0, description="Images declaring more pixels get 413 before decoding.")
    decode_budget_mb: float = Field(
        256.0,
        gt=0,
        description="Memory that decoding images may take at once in one API worker, all requests together; an image "
        "needing more alone gets 413, others wait their turn.",
    )
    read_timeout_s: float = Field(10.0, gt=0, description="A request body that sends nothing for this long gets 408.")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection whose request headers are not complete this long after it opened is closed.",
    )
    max_batch_images: int = Field(64, ge=1, description="Most images in one /score_batch request.")
    adaptive_batching: bool = Field(True, description="Merge concurrent requests into one model call.")
    max_batch_size: int = Field(64, ge=1, description="Most requests merged into one model call.")
    max_latency_ms: int = Field(10_000, ge=1, description="Queueing budget; requests that would exceed it get 503.")
    model_workers: int = Field(1, ge=1, description="Processes running the ONNX model.")
    api_workers: int = Field(1, ge=1, description="Processes decoding images and answering HTTP.")
    ort_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads per model worker (default: usable CPUs / model workers)."
    )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def decode_budget_bytes(self) -> int:
        return int(self.decode_budget_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServingSettings:
        """Settings from ANOMALY_<FIELD> variables (ANOMALY_MAX_BODY_MB=5); a bad value is a one-line error."""
        environ = dict(os.environ if environ is None else environ)
        known = {f"{ENV_PREFIX}{name.upper()}": name for name in cls.model_fields}
        values = {known[key]: value for key, value in environ.items() if key in known and value != ""}
        try:
            return cls(**values)
        except ValidationError as error:
            problem = error.errors()[0]
            variable = f"{ENV_PREFIX}{str(problem['loc'][0]).upper()}"
            raise AnomalyError(f"{variable}: {problem['msg']}") from None

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        return {
            f"{ENV_PREFIX}{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }
