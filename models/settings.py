"""Settings of the model side, read from the environment and ``.env`` (the bot's settings extend these)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    model_name: str = Field("bert-base-uncased", description="HF hub id or local directory of a masked LM")
    model_device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    model_dtype: str = Field(
        "auto", description="auto (bf16/fp16 on CUDA, fp32 on CPU), float32, bfloat16, float16, int8 (CPU)"
    )
    model_runtime: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="torch, or onnxruntime (CPU, fp32 or int8; pip install 'mlm-bot[onnx]'): exported once, cached",
    )
    model_onnx_cache: str | None = Field(None, description="where ONNX exports are kept (unset: ~/.cache/mlm-bot/onnx)")
    model_cuda_graphs: bool | None = Field(
        None,
        description="auto (unset): replay the encoder as CUDA graphs on a CUDA device; 1: ask for them; 0: never",
    )
    model_packed_weights: bool | None = Field(
        None,
        description="auto (unset): pack the encoder's weights for oneDNN on an x86 CPU; 1: ask for it; 0: never",
    )
    model_max_masks: int = Field(5, ge=1, le=50, description="most masks one sentence may hold")
    model_worker_url: str | None = Field(None, description="unset: the model runs in this process")
    batch_max_size: int = Field(32, ge=1, description="most inputs per model batch")
    batch_max_tokens: int = Field(16_384, ge=16, description="most padded tokens per model batch")
    queue_max: int = Field(512, ge=1, description="requests admitted at once; more get 'busy'")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline of one request inside the batcher")
    model_deadline_s: float = Field(
        10.0, gt=0, description="longest one chat request waits for the model, remote retries included"
    )
    worker_max_body_bytes: int = Field(1_000_000, ge=1024, description="largest HTTP request body")
    worker_max_inputs: int = Field(256, ge=1, description="most sentences in one HTTP request")
    worker_caller_max_in_flight: int = Field(
        256, ge=1, description="most sentences one caller (one address) may have in the worker's queue at once"
    )
    # A shared secret: the worker answers /v1/* and /metrics only to ``Authorization: Bearer <token>``, and the
    # bot's client sends it. Unset: no check (fine on loopback or a private compose network).
    worker_token: SecretStr | None = Field(None, description="bearer token the worker asks of its callers")

    @field_validator("model_cuda_graphs", "model_packed_weights", mode="before")
    @classmethod
    def _auto_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "auto") else value

    @field_validator("worker_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not value.isprintable() or " " in value:
                raise ValueError("must be one word of printable characters, e.g. from `openssl rand -hex 32`")
        return value

    def worker_token_value(self) -> str | None:
        return self.worker_token.get_secret_value() if self.worker_token is not None else None

    @field_validator("model_worker_url", "model_onnx_cache", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
