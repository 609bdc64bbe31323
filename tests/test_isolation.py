"""The network code never imports an array library: the backend does the arithmetic."""

import ast
import pathlib

import pytest

NETWORK_MODULES = ["model.py", "layers.py", "train.py", "trainer.py", "data_parallel.py",
                   "fit_options.py", "history.py", "optim.py"]
FORBIDDEN = {"numpy", "numba", "cupy", "torch", "scipy"}
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fastbp"


def imported_roots(source: str) -> set:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", NETWORK_MODULES)
def test_network_module_imports_no_backend_library(module):
    source = (PACKAGE / module).read_text()
    assert not imported_roots(source) & FORBIDDEN


def test_the_check_sees_an_import():
    assert imported_roots("import numpy as np\nfrom cupy import cuda\n") == {"numpy", "cupy"}
