"""``flexsparse model``: the Sparseloop-compatible engine (``run``, ``artifact``, ``study``) and the
quick design models (``--design``, ``compare``, ``unit-checks``).

Usage (``flexsparse.cli`` mounts ``app`` with ``main_app.add_typer(app, name="model")``)::

    flexsparse model --design highlight --workload resnet50 [--weights 4:6->2:4] [--activations 0.5]
    flexsparse model compare --designs dense,stc,dstc,highlight --workload resnet50 --out plots/
    flexsparse model unit-checks --out docs/model/quick
    flexsparse model run arch.yaml problem.yaml map.yaml sparse.yaml ERT.yaml --out out/
    flexsparse model artifact --root ../micro22-sparseloop-artifact --out docs/model
    flexsparse model study highlight|tailors|flaash|all --out docs/model

Tables are printed with rich (never truncated when the output is not a terminal); PNG plots and
JSON are written atomically.
Cost: that of the evaluated designs (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from flexsparse._util import atomic_write

__all__ = ["app", "parse_operand"]

app = typer.Typer(help="Analytical model of sparse accelerators (Sparseloop-style).", no_args_is_help=False,
                  add_completion=False)


def parse_operand(spec: str) -> Any:
    """``"0.3"`` -> Uniform(0.3); ``"2:4"`` -> Structured(2, 4); ``"4:6->2:4"`` -> HSS (outer first).

    >>> parse_operand("4:6->2:4")
    HSS(levels=((4, 6), (2, 4)))
    """
    from flexsparse.model.workload import HSS, Structured, Uniform
    s = spec.strip()
    try:
        if ":" not in s:
            return Uniform(float(s))
        levels = tuple(tuple(int(x) for x in part.split(":")) for part in s.split("->"))
    except ValueError:
        raise ValueError(f"bad operand spec {spec!r}: expected a density (0.3), G:H (2:4) or HSS (4:6->2:4)") from None
    if any(len(p) != 2 for p in levels):
        raise ValueError(f"bad operand spec {spec!r}: each level is G:H")
    return Structured(*levels[0]) if len(levels) == 1 else HSS(levels)


def _workload(name: str, weights: Optional[str], activations: Optional[str]) -> Any:
    from flexsparse.model.workload import load_workload, with_operands
    w = load_workload(name)
    return with_operands(w, a=parse_operand(weights) if weights else None,
                         b=parse_operand(activations) if activations else None)


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, default=str)


@app.callback(invoke_without_command=True)
def model(ctx: typer.Context,
          design: Optional[str] = typer.Option(None, "--design", "-d", help="design name (see --list)"),
          workload: Optional[str] = typer.Option(None, "--workload", "-w", help="shipped workload or YAML file"),
          arch: Optional[str] = typer.Option(None, "--arch", help="preset name or YAML file (default: design's)"),
          weights: Optional[str] = typer.Option(None, help="weight operand: density, G:H or HSS 'G1:H1->G0:H0'"),
          activations: Optional[str] = typer.Option(None, help="activation operand density"),
          out: Optional[Path] = typer.Option(None, help="write the report as JSON into this directory"),
          list_: bool = typer.Option(False, "--list", help="list designs, presets and workloads")) -> None:
    """Evaluate one design on one workload and print its report."""
    if ctx.invoked_subcommand is not None:
        return
    from flexsparse.model import list_designs, list_presets, list_workloads
    from flexsparse.model.designs import evaluate
    from flexsparse.model.report import print_table
    console = table_console_()
    if list_:
        console.print(f"designs: {', '.join(list_designs())}\npresets: {', '.join(list_presets())}\n"
                      f"workloads: {', '.join(list_workloads())}")
        return
    if design is None or workload is None:
        raise typer.BadParameter("give --design and --workload (or a subcommand: run, artifact, study, compare, "
                                 "unit-checks)")
    try:
        rep = evaluate(design, _workload(workload, weights, activations), arch)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    print_table([rep], title=f"{design} on {workload}", console=console)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / f"{design}-{rep.workload}.json", {**rep.as_row(), "energy_by_level": rep.energy_by_level,
                                                            "compute_energy_pj": rep.compute_energy_pj})


@app.command()
def compare(designs: str = typer.Option("dense,stc,dstc,highlight", help="comma-separated design names"),
            workload: str = typer.Option("resnet50", "--workload", "-w", help="workload name(s), comma-separated"),
            weights: Optional[str] = typer.Option(None, help="weight operand: density, G:H or HSS"),
            activations: Optional[str] = typer.Option(None, help="activation operand density"),
            baseline: str = typer.Option("dense", help="design the speedups are relative to"),
            out: Optional[Path] = typer.Option(None, help="directory for PNG plots and JSON")) -> None:
    """Compare designs on workloads: a table per workload, a speedup plot and (GEMM designs) EDP vs sparsity."""
    from flexsparse.model.designs import compare as run_compare
    from flexsparse.model.report import print_table
    names = [d.strip() for d in designs.split(",") if d.strip()]
    console = table_console_()
    speed: dict[str, dict[str, float]] = {}
    for wname in [w.strip() for w in workload.split(",") if w.strip()]:
        try:
            reps = run_compare(names, _workload(wname, weights, activations))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        print_table(reps, title=f"{wname}", baseline=baseline if baseline in names else None, console=console)
        base = next((r for r in reps if r.design == baseline), reps[0])
        speed[wname] = {r.design: base.cycles / r.cycles for r in reps}
    if out is not None:
        from flexsparse.model.plots import plot_edp_vs_sparsity, plot_speedup
        out.mkdir(parents=True, exist_ok=True)
        plot_speedup(speed, out / "speedup.png", title=f"speedup over {baseline}")
        files = ["speedup.png"]
        gemm = {"dense", "stc", "dstc", "highlight"}
        if set(names) <= gemm and "highlight" in names and "dense" in names:
            from flexsparse.model.validation import highlight_sweep
            for wname in speed:
                sweep = highlight_sweep(wname, designs=tuple(names))
                plot_edp_vs_sparsity(sweep, out / f"edp_vs_sparsity_{wname}.png")
                files.append(f"edp_vs_sparsity_{wname}.png")
        _write_json(out / "compare.json", speed)
        console.print(f"wrote {', '.join(files)} and compare.json to {out}")


@app.command("unit-checks")
def unit_checks(out: Path = typer.Option(Path("docs/model/quick"), help="directory for the PNG plots and numbers.json"),
                data: Optional[Path] = typer.Option(None, help="directory with SNAP ca-*.mat graphs (optional)"),
                ) -> None:
    """Unit checks of the quick design models (they hold by construction or calibration and are
    not evidence of fidelity; the external validation is ``flexsparse model artifact``)."""
    from flexsparse.model import validation as v
    from flexsparse.model.plots import plot_dstc, plot_edp_vs_sparsity, plot_flaash, plot_speedup
    from flexsparse.model.workload import HSS
    console = table_console_()
    out.mkdir(parents=True, exist_ok=True)
    nums: dict[str, Any] = {"golden": v.sparseloop_golden(), "dstc": v.dstc_table()}
    plot_dstc(nums["dstc"], out / "dstc.png")
    speed: dict[str, dict[str, float]] = {}
    for wname in ("resnet50", "transformer"):
        sweep = v.highlight_sweep(wname)
        plot_edp_vs_sparsity(sweep, out / f"edp_vs_sparsity_{wname}.png")
        nums[f"highlight_{wname}"] = {k: val for k, val in sweep.items()}
        row = next(r for r in sweep["rows"] if r["levels"] == HSS(((4, 6), (2, 4))).levels)
        speed[f"{wname} 4:6->2:4"] = {d: row["cycles"]["dense"] / c for d, c in row["cycles"].items()}
    fl = v.flaash_sweep()
    plot_flaash(fl, out / "flaash.png")
    nums["flaash"] = fl
    nums["flaash_balance"] = v.flaash_balance()
    mats: list[tuple[str, Any]] = [("powerlaw-20k", v.powerlaw_matrix(20000, 0.0005, 0.8, seed=0))]
    if data is not None:
        import scipy.io
        for f in sorted(data.glob("ca-*.mat")):
            mats.append((f.stem, scipy.io.loadmat(str(f))["Problem"][0, 0]["A"]))
    tail = {}
    for name, mat in mats:
        t = v.tailors_compare(mat, name, v.extensor_arch(4096))
        t.pop("reports")
        tail[name] = t
        speed[name] = {"extensor-n": 1.0 / t["speedup_vs_n"], "extensor-p": t["speedup_vs_p"] / t["speedup_vs_n"],
                       "extensor-ob": 1.0}
        speed[name] = {d: val * t["speedup_vs_n"] for d, val in speed[name].items()}  # relative to extensor-n
    nums["tailors"] = tail
    plot_speedup({k: val for k, val in speed.items() if "4:6" in k}, out / "speedup_dnn.png",
                 title="speedup over dense, weights HSS 4:6->2:4")
    plot_speedup({k: val for k, val in speed.items() if "4:6" not in k}, out / "speedup_extensor.png",
                 title="SpMSpM A@A: speedup over ExTensor-N")
    _write_json(out / "numbers.json", nums)
    console.print_json(json.dumps({"golden": nums["golden"], "dstc_max_abs_error": nums["dstc"]["max_abs_error"],
                                   "highlight_resnet50_gain": nums["highlight_resnet50"]["geomean_edp_gain"],
                                   "flaash_balance": nums["flaash_balance"], "tailors": tail}, default=str))


@app.command()
def run(files: list[Path] = typer.Argument(..., help="Sparseloop/Timeloop YAML files: architecture, problem, "
                                                     "mapping, sparse_optimizations, ERT (merged like timeloop-model)"),
        out: Optional[Path] = typer.Option(None, "--out", help="directory for stats.json"),
        trials: int = typer.Option(200, help="mapper: random mappings tried when the input has no mapping"),
        seed: int = typer.Option(0, help="mapper: random seed")) -> None:
    """Evaluate a Sparseloop-style input: cycles, energy and per-level actions; writes DIR/stats.json."""
    from flexsparse.model.sparseloop.engine import evaluate, load_spec
    from flexsparse.model.sparseloop.report import stats_dict, summary_table, table_console
    spec = load_spec(files)
    mapping = spec.mapping
    searched = None
    if mapping is None:
        from flexsparse.model.sparseloop.mapper import search
        searched = search(spec, trials=trials, seed=seed)
        mapping = searched.mapping
    ev = evaluate(spec, mapping)
    console = table_console()
    for w in spec.sparse.warnings:
        console.print(f"warning: {w}")
    if spec.default_energy_levels:
        console.print("warning: no ERT entry for " + ", ".join(spec.default_energy_levels)
                      + "; default Horowitz 45 nm energies used")
    console.print(summary_table(ev, title=f"{spec.problem.name}: {ev.cycles} cycles, {ev.energy_uJ:.4g} uJ"))
    if searched is not None:
        console.print(f"mapper: best of {searched.evaluated} valid mappings ({searched.tried} tried), "
                      f"objective {searched.objective}")
        for line in ev.mapping_text:
            console.print("  " + line)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        data = stats_dict(ev, spec)
        if searched is not None:
            data["mapper"] = {"tried": searched.tried, "valid": searched.evaluated, "objective": searched.objective}
        _write_json(out / "stats.json", data)
        console.print(f"wrote {out / 'stats.json'}")


@app.command("study")
def study_cmd(name: str = typer.Argument(..., help="highlight, tailors, flaash or all"),
              out: Path = typer.Option(Path("docs/model"), "--out", help="directory for NAME.json, NAME.md, NAME.png"),
              sensitivity: bool = typer.Option(True, "--sensitivity/--no-sensitivity",
                                               help="re-run with every parameter halved and doubled"),
              data: Optional[Path] = typer.Option(None, help="directory with the SNAP ca-*.mat graphs "
                                                             "(default: $FLEXSPARSE_SHARED_DATA or ../shared/data)"),
              ) -> None:
    """Re-derive a published design claim on the Sparseloop engine, with its sensitivity."""
    from flexsparse.model.sparseloop.studies.report import STUDIES, run_study
    names = STUDIES if name == "all" else (name,)
    if any(n not in STUDIES for n in names):
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}, all")
    console = table_console_()
    for n in names:
        res = run_study(n, out, sensitivity, data)
        claims = res.get("claims") or res.get("conclusions", {}).get("claims") or {}
        console.print(f"{n}: {res['seconds']:.0f} s; claims: "
                      + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in claims.items()))
        console.print(f"wrote {out / (n + '.json')}, {out / (n + '.md')}, {out / (n + '.png')}")


@app.command("artifact")
def artifact_cmd(root: Optional[Path] = typer.Option(None, help="Sparseloop MICRO'22 artifact checkout "
                                                                "(default: $FLEXSPARSE_SPARSELOOP_ARTIFACT)"),
                 setup: str = typer.Option("all", help="table7, fig15, fig12, fig13 (comma-separated) or all"),
                 out: Optional[Path] = typer.Option(None, help="directory for artifact.json and artifact.md")) -> None:
    """Compare the model with the reference outputs of the Sparseloop artifact."""
    from flexsparse.model.sparseloop import artifact as art
    from flexsparse.model.sparseloop.tables import artifact_tables
    base = art.find_artifact(root)
    if base is None:
        raise ValueError(f"Sparseloop artifact not found (give --root or set {art.ARTIFACT_ENV}); fetch "
                         "Accelergy-Project/micro22-sparseloop-artifact")
    setups = art.SETUPS + ("fig13",) if setup == "all" else tuple(x.strip() for x in setup.split(","))
    bad = [s for s in setups if s not in art.SETUPS + ("fig13",)]
    if bad:
        raise ValueError(f"unknown setup {bad[0]!r}; valid: {', '.join(art.SETUPS)}, fig13, all")
    results: dict[str, Any] = {s: [art.compare(c) for c in art.cases(s, base)] for s in setups if s != "fig13"}
    md, console_tables = artifact_tables(results)
    if "fig13" in setups:
        from flexsparse.model.sparseloop.tables import dstc_fig13_table
        results["fig13"] = art.dstc_fig13(base)
        md13, t13 = dstc_fig13_table(results["fig13"])
        md += "\n" + md13
        console_tables.append(t13)
    console = table_console_()
    for t in console_tables:
        console.print(t)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "artifact.json", results)
        with atomic_write(out / "artifact.md", "w") as f:
            f.write(md)
        console.print(f"wrote {out / 'artifact.json'} and {out / 'artifact.md'}")


def table_console_():
    """A console that does not truncate tables outside a terminal."""
    from flexsparse.model.sparseloop.report import table_console
    return table_console()
