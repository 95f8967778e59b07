"""Template filters of the web pages."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def get_value(mapping: dict[str, Any], key: str) -> Any:
    """``predicted|get_value:arm`` -> that arm's predicted value."""
    item = mapping.get(key) if isinstance(mapping, dict) else None
    return item.get("value") if isinstance(item, dict) else item
