"""The layering of ../shared/DESIGN.md, checked: runners and reports import nothing from bench; bench.plan imports
nothing from bench.run, nor torch, nor MLflow; reports and grid validation load no torch; nothing writes through
MLflow's process-global active run; nothing imports the CLI; the cluster engines (Ray, submitit) are imported by their
launchers only, never on one machine's path."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str, depth: int = 1) -> dict[str, set[str]]:
    """Module file -> the modules it imports, named by their first `depth` parts (anywhere in the file, lazy imports
    included); `package` is a folder path such as `bench/plan`."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {".".join(alias.name.split(".")[:depth]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(".".join(node.module.split(".")[:depth]))
        found[str(path.relative_to(ROOT))] = names
    return found


def test_arrows_point_one_way():
    for module, names in _imports("runners").items():
        assert not names & {"bench", "reports"}, module
    for module, names in _imports("strategies").items():
        assert not names & {"bench", "runners", "reports", "torch", "transformers"}, module
    for module, names in _imports("reports").items():
        assert not names & {"bench", "runners", "torch", "transformers"}, module
    for module, names in _imports("bench/plan", depth=2).items():  # planning: what runs, never how
        assert not names & {"bench.run", "bench.cli", "bench.search", "torch", "mlflow"}, module
    for module, names in _imports("bench/run", depth=2).items():
        assert not names & {"bench.cli", "bench.search"}, module
    for package in ("bench", "runners", "reports", "strategies"):
        for module, names in _imports(package).items():
            entry_point = module == "bench/__main__.py"  # `python -m bench` is the CLI itself
            assert entry_point or "bench.cli" not in (ROOT / module).read_text(encoding="utf-8"), module


def test_no_process_global_mlflow_run():
    for package in ("bench", "runners", "reports"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for call in ("mlflow.start_run", "mlflow.log_", "mlflow.set_tracking_uri", "mlflow.set_experiment",
                         "mlflow.end_run", "os.environ.get", "os.getenv"):
                assert call not in text or path.name == "cli.py", f"{path.relative_to(ROOT)} uses {call}"


def _loaded(code: str, modules: tuple[str, ...] = ("torch",), env: dict[str, str] | None = None) -> set[str]:
    """Which of `modules` running `code` in a fresh interpreter has imported."""
    report = f"\nimport sys\nprint(*(m in sys.modules for m in {modules!r}))"
    done = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, cwd=ROOT, check=True,
                          env=env)
    return {m for m, found in zip(modules, done.stdout.split()[-len(modules):]) if found == "True"}


def _loads_torch(code: str) -> bool:
    return bool(_loaded(code))


def test_grid_validation_and_reports_load_no_torch():
    assert not _loads_torch("from pathlib import Path\nfrom bench.plan.grid import read_grid, expand\n"
                            "from bench.plan.datasets import DatasetCache\n"
                            "expand(read_grid(Path('grids/quick.yaml')), Path('grids/quick.yaml'), DatasetCache(), "
                            "'float32')\nimport bench.plan.graph, bench.run.store, bench.run.executor, bench.run.jobs")
    assert not _loads_torch("import reports.analysis, reports.render, reports.store, reports.charts")


@pytest.mark.parametrize("argv", [["bench", "--help"], ["bench", "list"], ["bench", "run", "--grid", "missing.yaml"]])
def test_the_cli_answers_without_loading_torch(argv):
    assert not _loads_torch(f"import sys\nsys.argv = {argv!r}\nfrom bench.cli import main\n"
                            "try:\n    main()\nexcept SystemExit:\n    pass")


CLUSTER_ENGINES = ("ray", "submitit")


def test_only_the_launchers_import_the_cluster_engines():
    for package in ("bench", "runners", "reports", "strategies"):
        for module, names in _imports(package).items():
            owner = {"bench/run/launchers/ray.py": "ray", "bench/run/launchers/slurm.py": "submitit"}.get(module)
            assert not names & set(CLUSTER_ENGINES) - {owner}, module


def test_one_machine_never_loads_the_cluster_engines(tmp_path, tiny_folder):
    """`bench --help`, and `bench run` of a grid on this machine (a real one, on the tiny model), load neither Ray
    nor submitit."""
    assert not _loaded("import sys\nsys.argv = ['bench', '--help']\nfrom bench.cli import main\ntry:\n    main()\n"
                       "except SystemExit:\n    pass", CLUSTER_ENGINES)
    grid = tmp_path / "one.yaml"
    grid.write_text("name: one\ndatasets: [emotion]\nmodels: [tiny-random]\nbaselines: []\neval: {limit: 2}\n"
                    "inference: {max_new_tokens: 2}\n", encoding="utf-8")
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "tiny-random").symlink_to(tiny_folder)
    argv = ["bench", "run", "--grid", str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    code = f"import sys\nsys.argv = {argv!r}\nfrom bench.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n" \
           "    assert not e.code, e.code"
    assert not _loaded(code, CLUSTER_ENGINES, os.environ | {"GENCLSBENCH_CACHE": str(cache)})
    assert (tmp_path / "mlflow.db").is_file()
