"""Discovers installed providers (entry points `openha.providers`) and hands out instances."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from openha.providers.base import Provider, ProviderContext

log = logging.getLogger(__name__)
GROUP = "openha.providers"


class ProviderRegistry:
    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self._classes: dict[str, type[Provider]] = {}
        self._instances: dict[str, Provider] = {}
        for ep in entry_points(group=GROUP):
            try:
                self._classes[ep.name] = ep.load()
            except Exception:  # a broken third-party driver must not take the API down
                log.exception("cannot load provider %s", ep.name)

    @property
    def names(self) -> list[str]:
        return sorted(self._classes)

    @property
    def default(self) -> str:
        return self.context.settings.default_provider

    def has(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str) -> Provider:
        if name not in self._instances:
            self._instances[name] = self._classes[name](self.context)
        return self._instances[name]

    def description(self, name: str) -> str:
        return self._classes[name].description
