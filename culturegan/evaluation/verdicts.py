"""What a person would say about an evaluated run, in words, from its numbers; and one run's
numbers summarised over seeds (runs differ between processes: every number is reported as a mean
and spread)."""

from __future__ import annotations

import statistics

from culturegan.metrics import more_often_p

MIN_RETRIEVAL = 0.5  # below this top-1 content retrieval, most outputs do not show their input
MIN_COLLAPSE_RATIO = 0.5  # outputs at least half as varied as their inputs
MAX_CLOSER_TO_ANOTHER = 0.5  # share of outputs nearer another output than their own input
MAX_AMPLIFICATION = 3.0  # reconstruction error rise over an invisible perturbation's own size
MAX_PERIODIC_RATIO = 2.0  # outputs' periodic-artifact measure over real target images'
# a one-sided Fisher p below this: more outputs than inputs are classified as the target by more
# than chance (one output of 24 against none of the inputs is not evidence of a culture)
MAX_RECOGNISED_P = 0.05


def collapse_ratio(results: dict) -> float:
    """The headline collapse ratio: the smallest of the structure, culture-feature and
    judge-feature ratios (the outputs must vary with their inputs in layout and in their culture
    statistics, by the loss's features and by features it never sees)."""
    return min(results["content"]["collapse_ratio"].values())


def verdicts(results: dict) -> dict[str, str]:
    """Plain-language warnings for one evaluation's results, by kind ("retrieval", "collapse",
    "alike", "hidden_signal", "periodic", "projection", "judge"); empty when none applies."""
    found = {}
    content, target = results["content"], results["target"]
    retrieval = content["retrieval"]
    if retrieval["top1"] < MIN_RETRIEVAL:
        found["retrieval"] = (f"outputs do not show their inputs: {retrieval['top1']:.0%} retrieve their own "
                              f"input by structure (chance {retrieval['chance_top1']:.0%})")
    ratios, alike = content["collapse_ratio"], content["closer_to_another_output"]
    if collapse_ratio(results) < MIN_COLLAPSE_RATIO:
        found["collapse"] = (f"outputs collapse toward one picture: they vary {ratios['structure']:.2f}x as much as "
                             f"their inputs in structure, {ratios['culture']:.2f}x in culture features and "
                             f"{ratios['judge']:.2f}x in judge features")
    if alike > MAX_CLOSER_TO_ANOTHER:
        found["alike"] = f"{alike:.0%} of outputs look more like another output than like their own input"
    cycle = results.get("cycle")
    if cycle is not None and cycle["amplification"] > MAX_AMPLIFICATION:
        found["hidden_signal"] = (f"the cycle is carried by hidden signal: an invisible perturbation of the "
                                  f"outputs moves the reconstruction {cycle['amplification']:.1f}x its own size")
    periodic = results["periodic_artifacts"]
    if periodic["ratio"] > MAX_PERIODIC_RATIO:
        found["periodic"] = (f"periodic artifacts: the outputs' spectral peaks are {periodic['ratio']:.1f}x those "
                             f"of real {target} images")
    projection = results.get("projection")
    if projection is not None and projection["retrieval_top1"] < MIN_RETRIEVAL:
        found["projection"] = (f"the base model does not reproduce the photos: {projection['retrieval_top1']:.0%} of "
                               f"their projections retrieve their own photo ({projection['psnr_db']:.1f} dB), so "
                               "no transfer through its latent space can keep their content")
    outputs, inputs, p = judged_as_target(results)
    if p >= MAX_RECOGNISED_P:
        found["judge"] = (f"not recognisably {target} by the judge features: {outputs[0]} of {outputs[1]} outputs "
                          f"classified {target} (inputs: {inputs[0]} of {inputs[1]}; one-sided Fisher p = {p:.2g})")
    return found


def judged_as_target(results: dict) -> tuple[tuple[int, int], tuple[int, int], float]:
    """(outputs, inputs, p): the (classified as the target, images) counts of one evaluation's
    outputs and inputs by the judge features, and the one-sided Fisher p that the outputs are
    classified as the target more often than the inputs by chance alone."""
    judge, target = results["recognisability"]["judge"], results["target"]
    outputs, inputs = (target_count(judge[side], target) for side in ("outputs", "inputs"))
    return outputs, inputs, more_often_p(*outputs, *inputs)


def target_count(recognised: dict, target: str) -> tuple[int, int]:
    """(images classified as `target`, images) of one recognisability result."""
    return recognised["assigned"][target], sum(recognised["assigned"].values())


def summarise(runs: list[dict]) -> dict:
    """The results of one setting over seeds, the same nesting: each number becomes
    {"mean", "std" (sample; 0 for one seed), "min", "max", "values"}; everything else (names,
    per-image lists, flags) is taken from the first seed."""
    first = runs[0]
    if isinstance(first, bool) or not isinstance(first, (int, float, dict)):
        return first
    if isinstance(first, dict):
        return {key: summarise([run[key] for run in runs]) if all(key in run for run in runs) else value
                for key, value in first.items()}
    values = [float(run) for run in runs]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}

