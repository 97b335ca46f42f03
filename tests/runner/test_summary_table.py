"""The run table printed after a run: kept tokens, loyalty, prefill costs, and honest times for reused rows."""

from vlmeval_ivcp.runner.run import format_table


def _summary(method, options, answered, scores, random_weights=True):
    costs = dict(rows=4, answered=answered, visual_tokens=4 * 400, full_visual_tokens=4 * 400,
                 kept_visual_tokens=4 * 200, prefill_seconds=0.2, kv_cache_bytes=4 * 2**20, prefill_flops=300,
                 prefill_flops_unpruned=400)
    return dict(model="M", method=method, options=options, scores=scores, seconds=12.34, costs=costs,
                random_weights=random_weights)


def test_the_table_shows_costs_loyalty_and_reuse():
    scores = {"A": {"overall": 0.5, "loyalty": {"loyalty": 1.0, "count": 2, "missing": 0}},
              "B": {"overall": 0.25, "loyalty": {"loyalty": 0.5, "count": 6, "missing": 0}}}
    text = format_table([
        _summary("none", {}, 4, {"A": {"overall": 0.5}}),
        _summary("ivc_prune", {"ratio": 0.5, "layer": 2}, 0, scores),
        _summary("random", {"ratio": 0.5, "layer": 2}, 1, scores),
    ])
    lines = text.splitlines()
    assert lines[0] == (
        "| model | method | ratio | layer | kept visual (mean per row) | loyalty | prefill FLOPs | KV MiB | "
        "prefill ms | A | B | time (s) |"
    )
    assert lines[2] == "| M | none | - | - | 200 / 400 (50.0%) | - | 0.75× | 1.00 | 50 | 0.500† | - | 12.3 |"
    # loyalty pooled over the datasets by shared rows: (2 * 1.0 + 6 * 0.5) / 8
    assert lines[3] == ("| M | ivc_prune | 0.5 | 2 | 200 / 400 (50.0%) | 62.5% | 0.75× | 1.00 | 50 | 0.500† | "
                        "0.250† | reused 4 rows |")
    assert lines[4].endswith("| 12.3 (+3 reused rows) |")
    assert "random weights" in lines[-1] and "noise" in lines[-1]


def test_rows_without_recorded_costs_show_dashes():
    """Predictions stored before the costs were recorded (all zero) print "-", not a division by zero."""
    summary = _summary("none", {}, 0, {"A": {"overall": 0.5}})
    summary["costs"].update(
        dict.fromkeys(("visual_tokens", "full_visual_tokens", "prefill_flops", "prefill_flops_unpruned"), 0)
    )
    assert "| M | none | - | - | - | - | - |" in format_table([summary])


def test_a_downsampled_run_keeps_its_share_of_the_full_resolution_tokens():
    """`downsample` keeps every token of its smaller pictures: its share is of the unchanged pictures' tokens."""
    summary = _summary("downsample", {"ratio": 0.25}, 4, {"A": {"overall": 0.5}})
    summary["costs"].update(visual_tokens=4 * 100, kept_visual_tokens=4 * 100)
    assert "| M | downsample | 0.25 | - | 100 / 400 (25.0%) |" in format_table([summary])


def test_real_weights_carry_no_noise_note():
    text = format_table([_summary("none", {}, 4, {"A": {"overall": 0.5}}, random_weights=False)])
    assert "0.500 |" in text and "†" not in text
