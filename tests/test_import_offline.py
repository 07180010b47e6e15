"""Importing lesion makes no network call: albumentations' update check is off unless the user turns it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# In a fresh interpreter: every URL that urllib's opener (what albumentations' update check calls) is
# asked to open is recorded and refused, then the modules that import albumentations are imported.
_RECORD_URLS = """
import json, sys, urllib.request
opened = []
def refuse(self, url, *args, **kwargs):
    opened.append(getattr(url, "full_url", url))
    raise OSError("no network in this test")
urllib.request.OpenerDirector.open = refuse
import lesion.data.transforms, lesion.balance.embedding
assert "albumentations" in sys.modules
print(json.dumps({"opened": opened, "setting": __import__("os").environ.get("NO_ALBUMENTATIONS_UPDATE")}))
"""


def _import_lesion(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    result = subprocess.run([sys.executable, "-c", _RECORD_URLS], env={**environment, **env},
                            capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_lesion_does_not_check_for_albumentations_updates():
    assert _import_lesion() == {"opened": [], "setting": "1"}


def test_the_users_own_setting_wins():
    """A user who turns the check on gets it (which also shows the recorder sees the check)."""
    assert _import_lesion(NO_ALBUMENTATIONS_UPDATE="0") == {"opened": ["https://pypi.org/pypi/albumentations/json"],
                                                            "setting": "0"}
