"""Print one of the README's Quick start commands: `train` (the first) or `test` (the second)."""

import re
import sys
from pathlib import Path

readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
section = re.search(r"^## Quick start$(.*?)^## ", readme, re.M | re.S).group(1)
commands = [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
            for line in block.splitlines() if line.strip() and not line.startswith("#")]
if len(commands) != 2:
    sys.exit(f"README Quick start must hold exactly two commands, found {len(commands)}")
print(commands[{"train": 0, "test": 1}[sys.argv[1]]])
