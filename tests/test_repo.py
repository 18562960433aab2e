"""The repository's promises about itself."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert test_command in ci_lines


def test_layers_stack_one_way():
    """kernels/ never imports ops/nn; ops/ never imports nn/."""
    for layer, forbidden in (("kernels", ("ops", "nn", "functional")), ("ops", ("nn",))):
        for path in (ROOT / "tritonn" / layer).glob("*.py"):
            text = path.read_text()
            for name in forbidden:
                assert not re.search(rf"from \.\.{name}\b|import tritonn\.{name}\b", text), f"{path} imports {name}"
