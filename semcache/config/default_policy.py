"""The default category policy shipped with semcache: :data:`DEFAULT_POLICY_FILE`.

``semcache/policies/default.yaml`` is package data (in the repository a link
to ``policies/default.yaml``, the file the README documents; wheels and sdists
carry its content), so a proxy started from any directory, or from an
installed wheel, finds it without a ``--policies`` flag.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_POLICY_FILE = Path(__file__).parents[1] / "policies" / "default.yaml"
