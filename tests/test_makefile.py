"""The Makefile's list of files with multidevice tests is complete: a file missing from it
would have its multidevice tests silently never run by `make test`."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_file_with_multidevice_tests_is_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    listed = set(re.search(r"MULTIDEVICE_TESTS = (.*?)\n\n", makefile, re.S).group(1).replace("\\\n", " ").split())
    marked = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
              if p.name != Path(__file__).name and "mark." + "multidevice" in p.read_text()}
    assert marked and listed == marked
