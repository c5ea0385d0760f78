"""Where the evaluation data lives: ``$SEMCACHE_DATA``, else ``shared/data`` beside the checkout.

One place for every script and test: a git worktree or a clone elsewhere
has no ``../shared`` beside it, and then ``SEMCACHE_DATA`` names the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SEMCACHE_DATA") or REPO.parent / "shared" / "data")
