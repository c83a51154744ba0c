"""Generators whose answer a person knows get that answer from the evaluation: a constant or
collapsed generator does not show its inputs and collapses, the identity shows every input and
no target culture, another image's input is no match, a hidden code and a dot grid are named.
Also: summaries over seeds, and `culturegan demo --check`."""

import json

import pytest
import torch

from culturegan import cli, demo, metrics
from culturegan.evaluation import measure, report, summarise, verdicts
from helpers import culture_images

SIZE, COUNT = 64, 16


@pytest.fixture(scope="module")
def data():
    references = {name: culture_images(name, COUNT, size=SIZE) for name in ("photo", "ukiyoe", "kente")}
    return {"inputs": culture_images("photo", COUNT, offset=500, size=SIZE),
            "real": culture_images("ukiyoe", COUNT, offset=500, size=SIZE), "references": references}


def judged(data, outputs, back=None):
    return measure(data["inputs"], outputs, data["real"], data["references"], "photo", "ukiyoe", back)


def one_pattern_at_the_brightest_point(inputs):
    """What a collapsed model draws: a cream field over a dark-blue band for every input, and a
    black lattice where the input's brightest point (the sun) is."""
    outputs = torch.tensor([0.8, 0.7, 0.4]).view(1, 3, 1, 1).repeat(len(inputs), 1, SIZE, SIZE)
    outputs[:, :, int(SIZE * 0.6):] = torch.tensor([-0.6, -0.5, 0.2]).view(3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    for output, brightest in zip(outputs, inputs.mean(1).flatten(1).argmax(1).tolist()):
        y, x = divmod(brightest, SIZE)
        near = ((yy - y).abs() < 10) & ((xx - x).abs() < 10)
        output[:, near & ((yy % 3 == 0) | (xx % 3 == 0))] = -1.0
    return outputs


def test_the_identity_shows_every_input_and_no_target_culture(data):
    results = judged(data, data["inputs"], back=lambda x: x)
    assert results["content"]["retrieval"]["top1"] == 1.0
    assert results["content"]["collapse_ratio"]["structure"] == pytest.approx(1.0)
    for kind in ("judge", "culture"):
        assert results["recognisability"][kind]["outputs"]["target_rate"] == 0.0
    assert set(results["verdicts"]) == {"judge"}, results["verdicts"]


def test_a_constant_generator_is_called_collapsed_whatever_its_culture(data):
    constant = culture_images("ukiyoe", 1, offset=999, size=SIZE).expand(COUNT, -1, -1, -1)
    results = judged(data, constant)
    retrieval = results["content"]["retrieval"]
    assert retrieval["top1"] == pytest.approx(retrieval["chance_top1"])
    assert results["content"]["collapse_ratio"] == {"structure": 0.0, "culture": 0.0, "judge": 0.0}
    assert {"retrieval", "collapse", "alike"} <= set(results["verdicts"])
    assert results["recognisability"]["judge"]["outputs"]["target_rate"] == 1.0  # ukiyo-e, but not a transfer


def test_a_collapsed_generator_that_follows_only_the_sun(data):
    results = judged(data, one_pattern_at_the_brightest_point(data["inputs"]))
    retrieval = results["content"]["retrieval"]
    assert retrieval["top1"] < 0.35 and retrieval["mrr"] < 0.5, retrieval
    assert results["content"]["closer_to_another_output"] == 1.0  # one picture with a moving lattice
    assert results["content"]["collapse_ratio"]["judge"] < 0.5
    assert {"retrieval", "collapse", "alike", "periodic"} <= set(results["verdicts"]), results["verdicts"]


def test_another_images_input_is_no_match(data):
    results = judged(data, data["inputs"].roll(1, dims=0))
    assert results["content"]["retrieval"]["top1"] == 0.0
    assert {"retrieval", "alike"} <= set(results["verdicts"]) and "collapse" not in results["verdicts"]


def test_a_hidden_code_and_a_dot_grid_are_named(data):
    pattern = culture_images("ukiyoe", 1, offset=999, size=SIZE)
    hidden = judged(data, pattern + 0.005 * data["inputs"], back=lambda y: ((y - pattern) / 0.005).clamp(-1, 1))
    assert hidden["cycle"]["clean"] < 1e-3 and "hidden_signal" in hidden["verdicts"]
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dotted = (data["inputs"] - 0.3 * ((yy % 4 == 0) & (xx % 4 == 0)).float()).clamp(-1, 1)
    results = judged(data, dotted)
    assert "periodic" in results["verdicts"] and "retrieval" not in results["verdicts"]


def test_unknown_cultures_are_named(data):
    with pytest.raises(ValueError, match="maya"):
        measure(data["inputs"], data["inputs"], data["real"], data["references"], "photo", "maya")


def test_summaries_over_seeds():
    runs = [{"name": "a", "score": 1.0, "nested": {"n": 2, "ranks": [1, 2]}, "cycle": None},
            {"name": "b", "score": 3.0, "nested": {"n": 4, "ranks": [2, 1]}, "cycle": None}]
    summary = summarise(runs)
    assert summary["name"] == "a" and summary["cycle"] is None and summary["nested"]["ranks"] == [1, 2]
    assert summary["score"] == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "min": 1.0, "max": 3.0,
                                "values": [1.0, 3.0]}
    assert summarise(runs[:1])["nested"]["n"]["std"] == 0.0


def judge_results(outputs_target, inputs_target, count=24):
    """The parts of one evaluation's results that the judge verdict and the demo's judge target
    read: `outputs_target` of `count` outputs and `inputs_target` inputs classified as ukiyoe."""
    def assigned(hits):
        return {"assigned": {"ukiyoe": hits, "impressionist": count - hits, "photo": 0}}

    return {"target": "ukiyoe", "recognisability": {"judge": {"outputs": assigned(outputs_target),
                                                              "inputs": assigned(inputs_target)}}}


@pytest.fixture(scope="module")
def identity_results(data):
    return judged(data, data["inputs"])


@pytest.mark.parametrize("outputs_target, named", [(0, True), (1, True), (4, True), (5, False), (24, False)])
def test_the_judge_verdict_asks_for_more_than_chance(identity_results, outputs_target, named):
    results = {**identity_results, **judge_results(outputs_target, 0)}  # every other verdict's numbers: the identity's
    found = verdicts(results)
    assert ("judge" in found) == named, found
    if named:
        assert f"{outputs_target} of 24 outputs classified ukiyoe (inputs: 0 of 24; one-sided Fisher p = " \
            in found["judge"]


def test_the_report_gives_the_judge_counts_behind_its_rate():
    """A rate of 4% is one image of 24: the report's judge row says how many, per seed, with
    the chance of seeing as many by luck."""
    note = report._judged_counts([judge_results(1, 0), judge_results(5, 0)])
    assert note == (f"of 24 a seed: 1 (p = {metrics.more_often_p(1, 24, 0, 24):.2g}), "
                    f"5 (p = {metrics.more_often_p(5, 24, 0, 24):.2g}); inputs: 0 of 24")
    assert "1 (p = 0.5)" in note


@pytest.mark.parametrize("with_loss, without, inputs, met", [
    ((0, 1, 0), (0, 0, 0), 0, False),  # one output of 72: the demo of 2026-12-02, not evidence
    ((4, 3, 3), (0, 0, 0), 0, False),  # 10 of 72 pooled would pass; 3.3 of 24 a seed does not
    ((6, 5, 6), (0, 0, 0), 0, True),
    ((6, 5, 6), (0, 1, 0), 0, False),  # a third of an image without the loss counts as one: 5 of 24 against 1
    ((6, 5, 6), (4, 5, 4), 0, False),  # no more often than without the loss
    ((6, 5, 6), (0, 0, 0), 3, False),  # no more often than the inputs
])
def test_the_demo_judge_target_asks_for_more_than_chance_on_the_mean_seed(with_loss, without, inputs, met):
    runs = [[judge_results(hits, inputs) for hits in setting] for setting in (with_loss, without)]
    target, found, numbers = demo._judge_target(*runs)
    assert found == met, numbers
    assert numbers.startswith(f"{sum(with_loss) / 3:.3g} of 24 with (seeds: {', '.join(map(str, with_loss))}), ")
    assert f"inputs {inputs} (p = " in numbers


@pytest.mark.parametrize("met, check, code", [(True, True, 0), (False, True, 1), (False, False, 0)])
def test_demo_check_exit_status(monkeypatch, tmp_path, capsys, met, check, code):
    calls = []

    def run(out, settings, seeds):
        calls.append(seeds)
        (tmp_path / "targets.json").write_text(json.dumps([{"target": "a target", "met": met, "measured": "0.5"}]))
        return tmp_path / "report.html", met

    monkeypatch.setattr(demo, "run", run)
    assert cli.main(["--quiet", "demo", "--out", str(tmp_path), "--seeds", "2",
                     *(["--check"] if check else [])]) == code
    assert calls == [2]
    # the targets are the result: on standard output, even with --quiet
    assert capsys.readouterr().out.startswith(f"{'met' if met else 'MISSED'}: a target (0.5)\n")
    with pytest.raises(SystemExit) as error:
        cli.main(["demo", "--seeds", "0"])
    assert error.value.code == 2
