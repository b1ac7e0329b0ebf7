"""Configuration: a TOML file, overridden by CANOPY_* environment variables."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class DatabaseConfig(BaseModel):
    """Where the global tables and the cell's tables live (one URL each; the same URL is fine)."""

    global_url: str = ""
    cell_url: str = ""
    cell_name: str = "cell1"
    pool_size: int = 10
    # "inline" runs each transaction on the event loop (fastest for SQLite); "thread" hands it to a pool.
    execution: Literal["auto", "inline", "thread"] = "auto"
    echo: bool = False


class BusConfig(BaseModel):
    """The message bus: in-process for one machine, ZeroMQ between machines."""

    transport: Literal["local", "zmq"] = "local"
    # ZeroMQ: the address this process binds (control services), and the control endpoints it connects to.
    zmq_bind: str = ""
    zmq_connect: list[str] = Field(default_factory=list)
    call_timeout_s: float = 30.0


class ApiConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8774
    public_url: str = ""
    max_page_size: int = 1000
    region: str = "RegionOne"


class AuthConfig(BaseModel):
    token_secret: str = ""
    token_ttl_s: int = 3600 * 12


class QuotaDefaults(BaseModel):
    instances: int = 100
    cores: int = 400
    ram: int = 1024 * 1024


class ConductorConfig(BaseModel):
    lease_s: float = 60.0
    sweep_interval_s: float = 5.0
    # A task nobody leased for this long lost its wake-up cast; the sweeper starts it.
    lost_cast_s: float = 5.0
    heartbeat_flush_s: float = 2.0
    stop_timeout_s: float = 60.0
    agent_call_timeout_s: float = 600.0


class AgentConfig(BaseModel):
    host: str = ""
    driver: Literal["fake"] = "fake"
    heartbeat_s: float = 10.0
    availability_zone: str = "nova"
    datacenter: str = "dc1"
    rack: str = ""
    vcpus: int = 32
    memory_mb: int = 131072
    disk_gb: int = 2000


class FakeDriverConfig(BaseModel):
    """The simulated hypervisor: how long each operation takes, and what it does when told to fail."""

    hosts: int = 50
    spawn_delay_s: float = 0.2
    op_delay_s: float = 0.05
    vcpus: int = 32
    memory_mb: int = 131072
    disk_gb: int = 2000


class SchedulerConfig(BaseModel):
    refresh_s: float = 1.0
    weigher: Literal["spread", "pack"] = "spread"
    top_k: int = 3
    service_down_s: float = 60.0


class Settings(BaseSettings):
    """All of Canopy's configuration."""

    model_config = SettingsConfigDict(env_prefix="CANOPY_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("var")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    quota: QuotaDefaults = Field(default_factory=QuotaDefaults)
    conductor: ConductorConfig = Field(default_factory=ConductorConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    fake: FakeDriverConfig = Field(default_factory=FakeDriverConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("CANOPY_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolved(self) -> Settings:
        """Fill in what follows from other settings (database URLs under data_dir, a token secret)."""
        data = self.model_copy(deep=True)
        data.data_dir.mkdir(parents=True, exist_ok=True)
        if not data.database.global_url:
            data.database.global_url = f"sqlite:///{(data.data_dir / 'canopy.db').resolve()}"
        if not data.database.cell_url:
            data.database.cell_url = data.database.global_url
        if not data.auth.token_secret:
            data.auth.token_secret = _persistent_secret(data.data_dir / "token-secret")
        if not data.api.public_url:
            data.api.public_url = f"http://{data.api.host}:{data.api.port}"
        return data


def _persistent_secret(path: Path) -> str:
    """A random secret kept in the data folder, so tokens survive a restart."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def load_settings(**overrides: Any) -> Settings:
    """Settings from the TOML file named by CANOPY_CONFIG, the environment, then explicit overrides."""
    return Settings(**overrides).resolved()
