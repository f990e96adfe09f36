"""Reading the project's YAML data (rules, API vocabulary, scenarios, service config).

One loader for all of it: libyaml's CSafeLoader when PyYAML was built with it (about
ten times faster, which matters on the review path: every `bot review` reads the
rules), else the pure-Python SafeLoader. Both are safe loaders: no Python objects
are ever constructed from data.
"""

from __future__ import annotations

from typing import Any

# PyYAML is imported on first use: a review whose rules come from bot.cache
# reads no YAML at all.


def load_yaml(text: str) -> Any:
    """Parse one YAML document with a safe loader."""
    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)
