"""Settings of logs and metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ObservabilitySettings(BaseModel):
    """Structured logs and the Prometheus endpoint of ``supersede run``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto = JSON lines when stderr is not a terminal, text otherwise."
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Prometheus endpoint of the daemon; 0 = off."
    )
    metrics_host: str = Field("127.0.0.1", description="Address the endpoint listens on.")
