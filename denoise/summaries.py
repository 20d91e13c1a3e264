"""What each command prints, as a :class:`Printout` of its result: the
human-readable lines (tables from :mod:`denoise.tables`), the ``--json``
document and the exit code. The command line only prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from denoise.batch import EXIT_NOTHING, EXIT_OK
from denoise.tables import ACQUISITION, METRICS, SERIES, SERIES_DERIVED, TEXT, pick, qa_table, quality_table, table
from denoise.terminal import to_stdout
from denoise.text import printable


@dataclass
class Printout:
    lines: list[str]  # the human-readable report: on stdout, on stderr when the JSON goes to stdout
    data: dict | Callable[[], dict] | None = None  # the --json document (or what makes it, when asked for)
    code: int = EXIT_OK  # the exit code
    alone: bool = False  # the JSON says it all: no lines beside it on stdout (--json -)
    stderr: list[str] = field(default_factory=list)  # always on stderr
    nothing: str = ""  # the error to end with when there was nothing to do (exit 3)


def batch(report, command: str | None = None) -> Printout:
    """A :class:`denoise.batch.BatchReport`: each file that failed or was ignored, then the counts; the
    JSON adds what the job ran with (``settings``: ``denoise`` records its model and every option)."""
    lines = [f"{'FAILED ' if o.status == 'failed' else 'ignored'} {o.relpath}: {o.reason}"
             for o in report.outcomes if o.status in ("failed", "ignored")]
    nothing = [f"nothing to do: no CT image found in {report.input}"] if report.exit_code == EXIT_NOTHING else []
    return Printout([*lines, f"{report.summary()} -> {report.output}"],
                    {**({"command": command} if command else {}), **report.to_dict(),
                     **({"settings": report.settings} if report.settings else {})}, report.exit_code, stderr=nothing)


def run_report(report, command: str | None = None) -> Printout:
    """What a run wrote: :func:`volumes` for NIfTI, :func:`batch` for DICOM."""
    from denoise.batch import VolumeReport

    return volumes(report) if isinstance(report, VolumeReport) else batch(report, command)


def volumes(report) -> Printout:
    """``denoise`` into NIfTI (:class:`denoise.batch.VolumeReport`): each volume written (or
    why not), then the count; the JSON holds the settings as :func:`batch`'s does."""
    def name(v: dict) -> str:
        return f"series {v['series_number']}" if "series_uid" in v else v["input"]

    lines = [f"FAILED {name(v)}: {v['reason']}" if "reason" in v else
             f"{name(v)} ({v['slices']} slices) -> {v['output']}" for v in report.volumes]
    written = sum("output" in v for v in report.volumes)
    nothing = [f"nothing to do: no CT image found in {report.input}"] if not report.volumes else []
    return Printout([*lines, f"{written} of {len(report.volumes)} volume(s) written as NIfTI -> {report.output}"],
                    report.to_dict(), report.exit_code, stderr=nothing)


def noise(reports: dict) -> Printout:
    """``ct-denoise noise``: its runs' reports by name (``noisy``, and ``clean``
    with ``--clean-out``) as one JSON document; the worst exit code. Each run's
    own lines were printed as it ended (:func:`batch`)."""
    code = max(report.exit_code for report in reports.values())
    return Printout([], {"command": "noise", "exit_code": code,
                         **{name: (volumes(report) if hasattr(report, "volumes") else batch(report)).data
                            for name, report in reports.items()}}, code)


def info(summary: dict) -> Printout:
    """``ct-denoise info``: the series table, their warnings, the skipped files and the counts."""
    series = summary["series"]
    lines = table(TEXT, ("#", "series"), SERIES, [((str(r["index"]), r["series"]), r) for r in series]).lines(
        right=False)
    acquisition = [(str(r["index"]), {**r, **{k: f(r) for k, f in SERIES_DERIVED.items()}}) for r in series]
    lines += ["", *table(TEXT, "#", ACQUISITION, acquisition).lines(right=False)] if series else []
    lines += [f"warning: series {row['series']}: {w}" for row in series for w in row["warnings"]]
    lines += [f"skipped {s['file']}: {s['reason']}" for s in summary["skipped"]]
    lines.append(f"{len(series)} series, {sum(r['slices'] for r in series)} slices, "
                 f"{len(summary['skipped'])} files skipped")
    return Printout(lines, summary, EXIT_OK if series else EXIT_NOTHING, alone=True)


def _unmatched(first: list[str], second: list[str], first_name: str, second_name: str) -> list[str]:
    """Each unmatched file of the second set by name, the first set's count."""
    lines = [f"unmatched {second_name} file: {printable(name)}" for name in second]
    return lines + ([f"{len(first)} {first_name} file(s) had no {second_name} file"] if first else [])


def evaluation(result, reference: Path, test: Path, match: str) -> Printout:
    """``ct-denoise evaluate`` (:class:`pipelines.evaluate.Evaluation`) of
    REFERENCE and TEST, files paired by ``match``."""
    return Printout(evaluation_lines(result), result.to_dict, result.exit_code,
                    nothing=f"nothing matched between {reference} and {test} (match by {match})")


def evaluation_lines(result) -> list[str]:
    """``ct-denoise evaluate`` (:class:`pipelines.evaluate.Evaluation`): the
    scores per file and their mean, each method's mean, the no-reference measures."""
    low, high = result.window_hu
    lines = [f"metrics in window {low:g}..{high:g} HU mapped to [0, 1], data_range 1"
             + (", body mask" if result.masked else "")]
    rows = [(f.test, f.scores) for f in result.files]
    rows += [(f"mean of {len(result.files)} files", result.mean())] if result.files else []
    lines += table(TEXT, "file", METRICS[:4], rows).lines()
    lines += _unmatched(result.unmatched_reference, result.unmatched_test, "reference", "test")
    lines += [f"FAILED  {line}" for line in result.problems]
    if len(result.methods) > 1:
        columns = pick(METRICS, "psnr", "ssim", "rmse_hu", "seconds_per_slice")
        lines += ["", *table(TEXT, "method", columns, result.methods.items()).lines()]
    measured = result.quality
    if measured:
        lines += ["", "no-reference measures (where the reference has uniform tissue and edges; residual = noisy - "
                      "output)", *quality_table(TEXT, measured).lines()]
    return lines + [f"note: {note}" for note in result.notes]


def qa(result, before: Path, after: Path | None = None, json_out: Path | None = None) -> Printout:
    """``ct-denoise qa`` (:class:`pipelines.qa.QAResult`) of BEFORE (and AFTER):
    per series, per file and the mean; then notes and problems (and the
    ``--json`` file written, unless the JSON goes to stdout)."""
    written = None if to_stdout(json_out) else json_out
    paired = result.paired
    lines = ["before -> after, measured where BEFORE has uniform tissue and edges; noise reduction % and edge +% "
             "are the changes of noise SD and edge width"] if paired else []
    series = [(f"{s['series']} ({s['slices']} slices, NPS: {s['nps_method']})", s) for s in result.series]
    if series:
        lines += [*qa_table(TEXT, "series", series, paired).lines(), ""]
    if result.measured:
        files = [(f.file, f.to_dict()) for f in result.measured]
        files.append((f"mean of {len(result.measured)} files", result.mean()))
        lines += qa_table(TEXT, "file", files, paired).lines()
    lines += [f"note: {printable(note)}" for note in result.notes()]
    lines += _unmatched(result.unmatched_before, result.unmatched_after, "before", "after")
    lines += [f"ignored {printable(line)}" for line in result.ignored]
    lines += [f"FAILED  {printable(line)}" for line in result.problems]
    what = "nothing matched between BEFORE and AFTER" if after else "no CT image found"
    return Printout(lines + ([f"results written: {written}"] if written else []), result.to_dict, result.exit_code,
                    nothing=f"{what} ({before}{' and ' + str(after) if after else ''})")


def node_status(state: dict) -> Printout:
    """``ct-denoise serve --status``: the series receiving, the queue and the quarantine of a node folder."""
    pid = state["pid"]
    lines = [f"node: {'running, PID ' + str(pid) if pid else 'not running'}"]
    lines += [f"receiving  series {r['series']}: {r['instances']} instances, last {r['idle_s']:g} s ago"
              for r in state["receiving"]]
    for q in state["queue"]:
        extra = f", retry in {q['next_try_in_s']:g} s after: {q['last_error']}" if q["last_error"] else ""
        lines.append(f"queued     series {q['series']}: {q['instances']} instances, stage {q['stage']}{extra}")
    lines += [f"quarantine series {q['series']}: {name}: {reason} (in quarantine/{q['job']})"
              for q in state["quarantined"] for name, reason in q["files"].items()]
    lines.append(f"{len(state['receiving'])} receiving, {len(state['queue'])} queued, "
                 f"{sum(len(q['files']) for q in state['quarantined'])} quarantined, "
                 f"{state['finished_jobs']} finished jobs, {state['derived_series']} derived series")
    return Printout(lines, state, alone=True)


def written(what: str, path: Path, note: str = "") -> Printout:
    """``export-model`` and ``report``: what was written where (``model written: PATH (+ .json)``)."""
    return Printout([f"{what} written: {path}{note}"])


def demo(result: dict) -> Printout:
    """``ct-denoise demo``: what it denoised, the evaluation, the qa means and where the report is."""
    mean = result["qa"].mean()
    before, after, change = mean["before"], mean["after"], mean.get("change") or {}
    measured = (f"\nno reference (qa, noisy -> denoised, mean of {mean['files']} files): noise SD "
                f"{TEXT.value(before, 'noise_sd_hu')} -> {TEXT.value(after, 'noise_sd_hu')} HU "
                f"({TEXT.value(change, 'noise_reduction_pct')} % lower), NPS mean frequency "
                f"{TEXT.value(before, 'nps_mean_freq_mm')} -> {TEXT.value(after, 'nps_mean_freq_mm')} cycles/mm, "
                f"edge width {TEXT.value(change, 'edge_width_change_pct')} %")
    lines = [f"sample CT: {result['inputs']} (noise added: sigma 50 HU)", f"denoised: {result['denoise'].summary()}",
             *evaluation_lines(result["evaluation"]), measured,
             f"\nreport (noisy | model | clean | residual, metrics vs baselines, noise texture and sharpness): "
             f"{result['report']}"]
    return Printout(lines, code=max(result["noise"].exit_code, result["denoise"].exit_code))


def manifest(manifest: dict, out_path: Path) -> Printout:
    """``ct-denoise manifest build``: the counts per split, a line per series."""
    counts = manifest["counts"]
    lines = [f"{len(manifest['files'])} files in {len(manifest['series'])} series, split by {manifest['split_by']}: "
             + ", ".join(f"{s} {counts[s]['groups']} group(s)/{counts[s]['files']} files" for s in counts)
             + f" -> {out_path}"]
    lines += [f"  {row['split']:5s}  {row['n_slices']:4d} slices  {row['description']}" for row in manifest["series"]]
    return Printout(lines, {"command": "manifest build", "output": str(out_path), "files": len(manifest["files"]),
                   "series": len(manifest["series"]), "split_by": manifest["split_by"], "counts": counts})


def train(result) -> Printout:
    """``ct-denoise train`` (:class:`pipelines.train.TrainResult`): one line, and the run folder's parts."""
    run_dir = result.run_dir
    line = (f"trained {result.epochs_done} epoch(s); best validation PSNR {result.best_val_psnr:.2f} dB"
            + (" (stopped early)" if result.stopped_early else "") + f"; run folder {run_dir}")
    return Printout([line], {"command": "train", "run_dir": str(run_dir), "epochs_done": result.epochs_done,
                    "best_val_psnr_db": result.best_val_psnr, "stopped_early": result.stopped_early,
                    "seconds": sum(row.get("epoch_seconds", 0.0) for row in result.log),
                    "outputs": {"config": str(run_dir / "config.toml"), "log": str(run_dir / "log.json"),
                                "checkpoints": str(run_dir / "checkpoints")}})
