"""``theorylab``: list the chapters, run them at any scale with papermill, refresh committed outputs.

    theorylab list
    theorylab run CHAPTER|all [--profile ci|full [--smoke]] [--device auto|cpu|cuda|cuda:N] [--seed N]
                  [--out runs/] [-p NAME VALUE ...] [--force | --resume] [--dry-run]
    theorylab sweep CHAPTER...|all [--profile P [--smoke]] --seeds 0 1 2 [-p NAME VALUE ...]
                    [--executor local|slurm] [--jobs N] [--gpus 0,1] [--partition P] [--time MIN]
    theorylab refresh [CHAPTER ...] [--force]
    theorylab publish RUN_DIR [--force]
    theorylab baselines CHAPTER|all --from RUNS [RUNS ...] [--force]

Every value is validated (by :func:`theorylab.runtime.resolve`) before anything runs or is written.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from . import baselines, chapters, data, runtime


def execute(notebook: str | Path, output: str | Path, **kwargs: Any) -> Any:
    """``papermill.execute_notebook`` with the kernel on Unix sockets in a private temporary folder.

    Over the default TCP transport ipykernel warns on every start that the connection is unencrypted;
    IPC sockets are reachable only through the file system, so the warning (and the exposure) go away."""
    import tempfile

    import papermill
    from jupyter_client.manager import AsyncKernelManager

    with tempfile.TemporaryDirectory(prefix="theorylab-kernel-") as sockets:
        class IpcKernelManager(AsyncKernelManager):
            def __init__(self, **options: Any) -> None:
                super().__init__(transport="ipc", ip=os.path.join(sockets, "kernel"), **options)

        return papermill.execute_notebook(str(notebook), str(output), kernel_name="python3",
                                          kernel_manager_class=IpcKernelManager, **kwargs)


class UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


def book_root() -> Path:
    """The book's folder: ``THEORYLAB_BOOK_ROOT`` or the checkout this package is installed from."""
    root = Path(os.environ.get("THEORYLAB_BOOK_ROOT", Path(__file__).resolve().parents[2]))
    if not (root / "_toc.yml").exists():
        raise UsageError(f"no book found at {root} (no _toc.yml); set THEORYLAB_BOOK_ROOT")
    return root


def _chapters(names: list[str]) -> list[chapters.ChapterSpec]:
    if names == ["all"]:
        return list(chapters.CHAPTERS.values())
    try:
        return [chapters.chapter(name) for name in names]
    except ValueError as error:
        raise UsageError(str(error)) from None


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def command_list(args: argparse.Namespace) -> int:
    for spec in chapters.CHAPTERS.values():
        print(f"{spec.name}: {spec.title}")
        estimate = "measured" if spec.full_measured else "an estimate"
        print(f"  ci: about {spec.ci_seconds:g} s on 2 CPU cores; full: about {spec.full_minutes:g} min "
              f"({estimate}): {spec.full_note}")
        print(f"  GPU: {spec.gpu}; precision: {spec.precision}" if spec.gpu
              else f"  GPU: none, runs on the CPU: {spec.cpu_reason}")
        if spec.datasets:
            names = ", ".join(data.public_set(name).title for name in spec.datasets)
            print(f"  full downloads on first use: {names} (into ${data.DATA_ENV}, default {data.data_cache()})")
        rows = [[name, repr(p.ci), repr(p.full), repr(p.value("full", smoke=True)), p.describe(), p.help]
                for name, p in spec.params.items()]
        print("  " + _table(rows, ["parameter", "ci", "full", "smoke", "allowed", "meaning"]).replace("\n", "\n  "))
        print()
    return 0


def _overrides(pairs: list[list[str]] | None) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for name, value in pairs or []:
        if name in ("profile", "device", "seed"):
            raise UsageError(f"-p {name}: use --{name} instead")
        overrides[name] = value
    return overrides


def _notebook_figures(notebook: dict, folder: Path) -> int:
    """Write every PNG output of an executed notebook to ``folder/cell-NN-K.png``."""
    count = 0
    for index, cell in enumerate(notebook.get("cells", [])):
        for k, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {}).get("image/png")
            if data:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"cell-{index:02d}-{k}.png").write_bytes(base64.b64decode("".join(data)))
                count += 1
    return count


def _describe_cell(notebook: Path, exec_count: int) -> str:
    """'In [7] (`first line of its code`)': how a reader finds a failing cell in the notebook."""
    first = "?"
    try:
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell.get("execution_count") == exec_count:
                source = cell["source"]
                first = ("".join(source) if isinstance(source, list) else source).strip().splitlines()[0]
    except (OSError, ValueError, IndexError, KeyError):
        pass
    return f"cell In [{exec_count}] (`{first[:70]}`)"


def command_run(args: argparse.Namespace) -> int:
    specs = _chapters(args.chapter)
    overrides = _overrides(args.param)
    orphans = sorted(set(overrides) - {name for spec in specs for name in spec.params})
    if orphans:
        raise UsageError(f"unknown parameter(s) {orphans} for chapter(s) {', '.join(spec.name for spec in specs)}")
    plans = []
    for spec in specs:
        known = {name: value for name, value in overrides.items() if name in spec.params}
        try:
            resolved = runtime.resolve(spec.name, args.profile, args.device, args.seed, args.smoke, **known)
        except ValueError as error:
            raise UsageError(f"{spec.name}: {error}") from None
        out_dir = Path(args.out) / f"{spec.name}-{args.profile}{'-smoke' if args.smoke else ''}"
        if out_dir.exists() and any(out_dir.iterdir()) and not (args.force or args.resume or args.dry_run):
            raise UsageError(f"{out_dir} already holds a run; pass --resume to continue it or --force to overwrite it")
        plans.append((spec, resolved, known, out_dir))
    if args.dry_run:
        for spec, resolved, _, out_dir in plans:
            print(json.dumps({"chapter": spec.name, "output": str(out_dir), "parameters": resolved}, indent=2))
        return 0

    from papermill.exceptions import PapermillExecutionError

    root = book_root()
    summary = []
    for spec, resolved, known, out_dir in plans:
        status_file = out_dir / "status.json"
        if args.resume and status_file.exists():
            previous = json.loads(status_file.read_text())
            if previous.get("status") == "ok" and previous.get("parameters") == runtime.jsonable(resolved):
                print(f"== {spec.name}: already completed in {out_dir}, skipped (--resume)")
                summary.append([spec.name, args.profile, "kept", f"{previous['seconds']:.1f}", "", ""])
                continue
        if args.force:
            shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        status_file.unlink(missing_ok=True)
        (out_dir / "metrics.json").unlink(missing_ok=True)
        shutil.rmtree(out_dir / "figures", ignore_errors=True)
        output = out_dir / Path(spec.notebook).name
        parameters = {"profile": args.profile, "device": args.device, "seed": args.seed}
        if args.smoke:
            parameters["smoke"] = True
        # papermill writes tuples as strings; lists come through as Python lists.
        parameters.update({name: list(resolved[name]) if isinstance(resolved[name], tuple) else resolved[name]
                           for name in known})
        print(f"== {spec.name} ({args.profile}, device {resolved['device']}) -> {output}", flush=True)
        os.environ[runtime.RUN_DIR_ENV] = str(out_dir.resolve())
        os.environ[runtime.COMMAND_ENV] = shlex.join(["theorylab", *args.argv])
        if args.compare_baselines:
            os.environ[baselines.COMPARE_ENV] = "1"
        if args.smoke:  # at toy sizes the claims need not hold: the kernel runs with assertions off
            os.environ["PYTHONOPTIMIZE"] = "1"
        start = time.perf_counter()
        status, failed = "ok", ""
        try:
            execute(root / spec.notebook, output, parameters=parameters,
                    cwd=str((root / spec.notebook).parent), progress_bar=True, log_output=False)
        except PapermillExecutionError as error:
            status = "FAILED"
            failed = f"{_describe_cell(output, error.exec_count)}: {error.ename}: {error.evalue}"
        finally:
            os.environ.pop(runtime.RUN_DIR_ENV, None)
            os.environ.pop(runtime.COMMAND_ENV, None)
            if args.smoke:
                os.environ.pop("PYTHONOPTIMIZE", None)
        seconds = time.perf_counter() - start
        figures = _notebook_figures(json.loads(output.read_text()), out_dir / "figures") if output.exists() else 0
        status_file.write_text(json.dumps({"chapter": spec.name, "status": status, "seconds": round(seconds, 1),
                                           "failure": failed, "parameters": runtime.jsonable(resolved)}, indent=2))
        summary.append([spec.name, args.profile, status, f"{seconds:.1f}", str(figures), failed])
        if failed:
            print(f"   {spec.name} failed at {failed}; the partial notebook is {output}", file=sys.stderr)
    print()
    print(_table(summary, ["chapter", "profile", "status", "seconds", "figures", "failure"]))
    return 1 if any(row[2] not in ("ok", "kept") for row in summary) else 0


def command_sweep(args: argparse.Namespace) -> int:
    """Plan every job (validated), run them on submitit, print one table, write ``OUT/sweep.json``."""
    from . import sweep

    try:
        jobs = sweep.plan(args.chapter, profile=args.profile, seeds=args.seeds, grid=args.param or [],
                          device=args.device, smoke=args.smoke, out=args.out)
        gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else []
        if args.executor == "local" and not gpus and args.device != "cpu":
            import torch

            if torch.cuda.is_available():  # submitit hides every GPU from a job not given one
                raise ValueError("CUDA is visible here but submitit's local jobs see no GPU unless given one: "
                                 "pass --gpus 0,1,... (one per running job) or --device cpu")
        if args.executor == "slurm":
            executor = sweep.slurm_executor(Path(args.out) / "submitit", partition=args.partition,
                                            time_min=args.time, gpus_per_job=args.gpus_per_job,
                                            max_parallel=args.jobs, cpus_per_job=args.cpus_per_job)
    except ValueError as error:
        raise UsageError(str(error)) from None
    busy = [job.name for job in jobs if job.folder.exists() and any(job.folder.iterdir())]
    if busy and not (args.resume or args.force):
        raise UsageError(f"{len(busy)} job folder(s) under {args.out} already hold runs (e.g. {busy[0]}); "
                         "pass --resume to continue them or --force to start afresh")
    if args.force:
        for job in jobs:
            shutil.rmtree(job.folder, ignore_errors=True)
    print(f"sweep: {len(jobs)} job(s) on {args.executor}, at most {args.jobs} at once -> {args.out}", flush=True)
    if args.executor == "local":
        try:
            results = sweep.run_local(jobs, max_parallel=args.jobs, gpus=gpus, timeout_min=args.time)
        except ValueError as error:
            raise UsageError(str(error)) from None
    else:
        results = sweep.run_slurm(jobs, executor)
    summary = sweep.write_summary(args.out, jobs, results)
    rows = [[r["job"], r["status"], f"{r['seconds']:.1f}", r["failure"][:60], r["log"] if r["status"] != "ok" else ""]
            for r in results]
    print()
    print(_table(rows, ["job", "status", "seconds", "failure", "log"]))
    failed = [r["job"] for r in results if r["status"] != "ok"]
    print(f"\n{len(results) - len(failed)} of {len(results)} jobs ok; means and spreads over seeds in {summary}")
    if failed:
        print(f"theorylab: failed: {', '.join(failed)} (logs above)", file=sys.stderr)
    return 1 if failed else 0


def source_hash(root: Path, markdown: Path) -> str:
    """SHA-256 of what a chapter's outputs depend on: its code cells, the package, the pins, and its
    baseline (whose calibration spreads the chapter prints)."""
    digest = hashlib.sha256()
    digest.update(markdown.read_bytes())
    baseline = baselines.baseline_path(root, markdown.stem)
    for path in sorted((root / "src" / "theorylab").glob("*.py")) + [root / "requirements.txt", baseline]:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def page_hash(root: Path, markdown: Path) -> str:
    """What a chapter's committed page depends on: :func:`source_hash` and its published full result
    (which its box shows). Kept apart from :func:`source_hash`, which a published result records and
    which therefore cannot cover the result itself."""
    from . import results

    digest = hashlib.sha256(source_hash(root, markdown).encode())
    published = results.path(root, markdown.stem)
    if published.exists():
        digest.update(published.read_bytes())
    return digest.hexdigest()


SYNCED_METADATA = ("tags", "mystnb")
"""Cell metadata the book renders from the .ipynb (folding, figure captions), kept equal to the .md's."""


def sync_cell_metadata(markdown: Path, notebook: Path) -> None:
    """Copy each cell's :data:`SYNCED_METADATA` from the MyST source to the paired notebook, cell by cell:
    ``jupytext --update`` keeps the notebook's old values where the source added a tag to an empty
    list, so a new ``hide-cell`` or caption would otherwise never reach the page."""
    import jupytext
    import nbformat

    source = jupytext.read(markdown)
    target = nbformat.read(notebook, as_version=4)
    if [c.cell_type for c in source.cells] != [c.cell_type for c in target.cells]:
        raise ValueError(f"{notebook}: its cells do not match {markdown} (sync them with jupytext first)")
    for mine, theirs in zip(source.cells, target.cells, strict=True):
        for key in SYNCED_METADATA:
            if mine.metadata.get(key):
                theirs.metadata[key] = mine.metadata[key]
            else:
                theirs.metadata.pop(key, None)
    nbformat.write(target, notebook)


def command_refresh(args: argparse.Namespace) -> int:
    """Sync each chapter's .ipynb from its .md and re-execute it (``ci`` profile) when stale."""
    import nbformat
    import papermill

    root = book_root()
    specs = _chapters(args.chapter or ["all"])
    status = 0
    for spec in specs:
        notebook = root / spec.notebook
        markdown = notebook.with_suffix(".md")
        subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--update", "--to", "ipynb",
                        "--output", str(notebook), str(markdown)], check=True)
        sync_cell_metadata(markdown, notebook)
        digest = page_hash(root, markdown)
        recorded = nbformat.read(notebook, as_version=4).metadata.get("theorylab", {})
        if recorded.get("source_hash") == digest and recorded.get("success") and not args.force:
            print(f"{spec.name}: up to date")
            continue
        print(f"{spec.name}: executing (ci profile)", flush=True)
        start = time.perf_counter()
        success = True
        try:
            execute(notebook, notebook, cwd=str(notebook.parent), progress_bar=True, log_output=False)
        except papermill.PapermillExecutionError as error:
            success = False
            print(f"{spec.name}: failed at cell {error.cell_index}: {error.ename}: {error.evalue}", file=sys.stderr)
            status = 1
        seconds = time.perf_counter() - start
        executed = nbformat.read(notebook, as_version=4)
        import platform

        import torch

        executed.metadata["theorylab"] = {
            "source_hash": digest, "profile": "ci", "seconds": round(seconds, 1), "success": success,
            "executed_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "executed_on": {"cpu": runtime.platform_processor(), "cpu_count": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__},
        }
        nbformat.write(executed, notebook)
        print(f"{spec.name}: {'ok' if success else 'FAILED'} in {seconds:.1f} s")
    return status


def command_publish(args: argparse.Namespace) -> int:
    """Copy a full run's (or a sweep's) metrics, aggregated over seeds, into ``results/full/CHAPTER.json``."""
    from . import results

    try:
        targets = results.publish(args.run_dir, book_root(), force=args.force)
    except (ValueError, FileExistsError) as error:
        raise UsageError(str(error)) from None
    for target in targets:
        document = json.loads(target.read_text())
        print(f"{document['chapter']}: {len(document['seeds'])} seed(s), {len(document['metrics'])} numbers, "
              f"status {document['status']} -> {target}")
    print("run `theorylab refresh` to show them on the chapters' pages")
    return 0


def command_baselines(args: argparse.Namespace) -> int:
    """Write each chapter's ``chapters/baselines/NAME.json`` from the ci runs found under ``--from``."""
    root = book_root()
    specs = _chapters(args.chapter)
    found: dict[str, list[dict]] = {}
    for folder in args.runs:
        for spec in specs:
            path = Path(folder) / f"{spec.name}-ci" / "metrics.json"
            status = path.with_name("status.json")
            if path.exists() and status.exists() and json.loads(status.read_text()).get("status") == "ok":
                found.setdefault(spec.name, []).append(json.loads(path.read_text()))
    missing = [spec.name for spec in specs if len(found.get(spec.name, [])) < 2]
    if missing:
        raise UsageError(f"fewer than 2 completed ci runs under --from for: {', '.join(missing)}")
    for spec in specs:
        try:
            path = baselines.write(root, spec.name, found[spec.name], force=args.force)
        except (ValueError, FileExistsError) as error:
            raise UsageError(f"{spec.name}: {error}") from None
        entries = json.loads(path.read_text())["metrics"]
        print(f"{spec.name}: {len(found[spec.name])} runs, {len(entries)} metrics -> {path.relative_to(root)}")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="theorylab", description=__doc__.split("\n\n")[0])
    commands = main.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="chapters, their parameters (ci and full values), rough run times")
    run = commands.add_parser("run", help="execute chapters with papermill")
    run.add_argument("chapter", nargs="+", help="chapter names, or 'all'")
    run.add_argument("--profile", default="ci", help="ci (default) or full")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    run.add_argument("--seed", default=0, type=_seed, help="random seed (default 0)")
    run.add_argument("--smoke", action="store_true",
                     help="with --profile full: the full code path at toy sizes (data written on the spot "
                          "where a public set is absent), assertions off; seconds per chapter on a CPU")
    run.add_argument("--out", default="runs", help="folder for executed notebooks, figures, metrics.json")
    run.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override a chapter parameter")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="delete an existing run folder and start afresh")
    again.add_argument("--resume", action="store_true",
                       help="continue in an existing run folder: skip completed chapters, reuse saved checkpoints")
    run.add_argument("--dry-run", action="store_true", help="print the resolved parameters, run nothing")
    run.add_argument("--compare-baselines", action="store_true",
                     help="fail a check cell whose recorded numbers leave the committed ci baseline's tolerance")
    sweep = commands.add_parser("sweep", help="run chapters x seeds x parameter points as jobs on submitit")
    sweep.add_argument("chapter", nargs="+", help="chapter names, or 'all'")
    sweep.add_argument("--profile", default="ci", help="ci (default) or full")
    sweep.add_argument("--smoke", action="store_true", help="with --profile full: toy sizes")
    sweep.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    sweep.add_argument("--seeds", nargs="+", type=_seed, default=[0], help="seeds (default 0)")
    sweep.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                       help="a parameter value; repeat a name for several values (their product is swept)")
    sweep.add_argument("--out", default="runs/sweep", help="folder of the job folders and sweep.json")
    sweep.add_argument("--executor", choices=("local", "slurm"), default="local")
    sweep.add_argument("--jobs", type=_positive, default=1, help="jobs at once (local) or array parallelism")
    sweep.add_argument("--gpus", default="", help="local: comma-separated GPU indices, one per running job")
    sweep.add_argument("--time", type=_positive, default=24 * 60, help="minutes per job (default 1440)")
    sweep.add_argument("--partition", default=None, help="slurm: partition")
    sweep.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job (default 1)")
    sweep.add_argument("--cpus-per-job", type=_positive, default=None, help="slurm: CPUs per job")
    again = sweep.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the jobs found in --out")
    again.add_argument("--force", action="store_true", help="delete the jobs' folders and start afresh")
    refresh = commands.add_parser("refresh", help="sync .md -> .ipynb and re-execute stale chapters")
    refresh.add_argument("chapter", nargs="*", help="chapter names (default: all)")
    refresh.add_argument("--force", action="store_true", help="re-execute even when up to date")
    publish = commands.add_parser("publish", help="copy a full run's metrics into results/full/CHAPTER.json")
    publish.add_argument("run_dir", help="a theorylab run folder, or a sweep's --out folder (one file per chapter)")
    publish.add_argument("--force", action="store_true", help="replace an existing result")
    calibrate = commands.add_parser("baselines", help="write ci baselines and tolerances from calibration runs")
    calibrate.add_argument("chapter", nargs="+", help="chapter names, or 'all'")
    calibrate.add_argument("--from", dest="runs", nargs="+", required=True,
                           help="run folders (theorylab run --out) of the ci profile, several seeds and CPUs")
    calibrate.add_argument("--force", action="store_true", help="replace existing baseline files")
    return main


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a positive integer")
    return value


def _seed(text: str) -> int:
    try:
        return runtime.check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a non-negative integer") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    handlers: dict[str, Any] = {"list": command_list, "run": command_run, "refresh": command_refresh,
                                "baselines": command_baselines, "sweep": command_sweep,
                                "publish": command_publish}
    try:
        return handlers[args.command](args)
    except UsageError as error:
        print(f"theorylab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
