"""The demo's ``--model``: the offline scripted model, or a real provider the user has configured.

``--model`` is ``scripted`` (the default), ``bedrock`` (Strands' default model; ``bedrock:<model id>``
for another), ``anthropic:<model id>``, ``openai:<model id>`` or ``ollama:<model id>``. A provider
is checked before anything runs: its package installed, its credentials present.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from strands.models.model import Model

from .errors import USAGE, CliError

SCRIPTED = "scripted"
FALLBACK = "Leave out --model to run the demo on the offline scripted model."


@dataclass(frozen=True)
class Provider:
    """How to build one provider's Strands model and what it needs."""

    module: str  # strands.models.<module>
    cls: str
    package: str  # the client package it imports
    key_env: str | None  # environment variable holding its API key, if it needs one
    needs_model_id: bool


PROVIDERS = {
    "bedrock": Provider("bedrock", "BedrockModel", "boto3", None, False),
    "anthropic": Provider("anthropic", "AnthropicModel", "anthropic", "ANTHROPIC_API_KEY", True),
    "openai": Provider("openai", "OpenAIModel", "openai", "OPENAI_API_KEY", True),
    "ollama": Provider("ollama", "OllamaModel", "ollama", None, True),
}


def describe(spec: str) -> str:
    """Say what the model is, for the screen."""
    if spec == SCRIPTED:
        return "the offline ScriptedModel (canned replies: no LLM, no network, no credentials)"
    return f"{spec} (a real model: replies vary, and calls are billed by the provider)"


def check(spec: str) -> tuple[str, str | None]:
    """Split and check ``--model``: ``(provider, model id)``, or a ``CliError`` saying what is missing."""
    name, _, model_id = spec.partition(":")
    if spec == SCRIPTED:
        return SCRIPTED, None
    provider = PROVIDERS.get(name)
    if provider is None:
        choices = ", ".join(
            [SCRIPTED, "bedrock[:<model id>]", *(f"{p}:<model id>" for p in PROVIDERS if p != "bedrock")]
        )
        raise CliError(f"--model {spec!r}: unknown provider {name!r}; choose one of {choices}.", USAGE)
    if provider.needs_model_id and not model_id:
        raise CliError(f"--model {name} needs a model id: --model {name}:<model id>.", USAGE)
    if importlib.util.find_spec(provider.package) is None:
        raise CliError(
            f"--model {name}: the {provider.package!r} package is not installed. "
            f"Install it with: pip install 'strands-agents[{name}]'. {FALLBACK}",
            USAGE,
        )
    if provider.key_env and not os.environ.get(provider.key_env):
        raise CliError(f"--model {name}: no API key: set {provider.key_env}. {FALLBACK}", USAGE)
    if name == "bedrock":
        _check_aws_credentials()
    return name, model_id or None


def _check_aws_credentials() -> None:
    import boto3  # type: ignore[import-untyped]

    if boto3.Session().get_credentials() is None:
        raise CliError(
            "--model bedrock: no AWS credentials found. Configure them (`aws configure`, AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), set AWS_REGION, and enable access to the model in the "
            f"Amazon Bedrock console. {FALLBACK}",
            USAGE,
        )


def build(spec: str) -> Model:
    """Build the real provider's model for ``spec`` (already :func:`check`-ed; not for ``scripted``)."""
    name, model_id = check(spec)
    provider = PROVIDERS[name]
    options: dict[str, Any] = {}
    if model_id:
        options["model_id"] = model_id
    if provider.key_env:
        options["client_args"] = {"api_key": os.environ[provider.key_env]}
    if name == "anthropic":
        options["max_tokens"] = 1024
    cls = getattr(importlib.import_module(f"strands.models.{provider.module}"), provider.cls)
    if name == "ollama":
        return cls(os.environ.get("OLLAMA_HOST", "http://localhost:11434"), **options)  # type: ignore[no-any-return]
    return cls(**options)  # type: ignore[no-any-return]
