"""Each experiment module runs end to end on a tiny model and writes its files."""
import json

import pytest

from awq_ext.analysis.runner import quant_cfg

from awq_ext.analysis import calib_budget, fig7, table1, table2, table5, table7, table8


def test_table1_structure(runner, settings, tmp_path):
    res = table1.run(runner, settings, group=32, fracs=(0.05,), criteria=("activation", "random"))
    assert [r["label"] for r in res.rows] == ["fp32", "rtn", "keep activation 0.05", "keep random 0.05"]
    paths = res.write(tmp_path)
    data = json.loads(open(paths["json"]).read())
    assert data["settings"]["bits"] == 3 and len(data["rows"]) == 4


@pytest.mark.slow
def test_table7_awq_gptq_replays_awq_search(runner, settings):
    res = table7.run(runner, settings, group=32)
    rows = {r["label"]: r for r in res.rows}
    assert "replayed_record" in rows["awq+gptq w2"] and "replayed_record" not in rows["awq w2"]
    assert all(r["ppl"] > 0 for r in res.rows)


def test_table2_reports_search_losses(runner, settings):
    res = table2.run(runner, settings, group=32, factors=(2.0,))
    losses = res.extra["search_loss_ratio"]
    assert set(losses) == {label for label, _, _ in table2.SEARCHED}
    # s = 1 is always a candidate, so a searched loss never exceeds round-to-nearest's.
    assert all(0 <= x <= 1 + 1e-6 for per_op in losses.values() for x in per_op.values())
    # One comparison per scaling group both searches saw: 1 block x 3 groups (q/k/v, gate/up, down).
    counts = res.extra["duo_below_act"]
    assert sum(tot for _, tot in counts.values()) == len(losses["s_X only"]) == 3
    assert sum(n for n, _ in counts.values()) == sum(
        losses["s_X & s_W"][op] < losses["s_X only"][op] for op in losses["s_X only"])
    assert "Scale-search loss" in res.markdown_table


def test_search_loss_ratios_by_op_kind():
    import torch

    from awq_ext.calibrate import SearchRecord
    from awq_ext.calibrate.records import ScaleEntry

    rec = SearchRecord()
    for i, (loss, ident) in enumerate(((1.0, 4.0), (3.0, 6.0))):
        op = f"model.layers.{i}.input_layernorm"
        rec.scales[op] = ScaleEntry(op, [], torch.ones(4), loss=loss, identity_loss=ident)
    rec.scales["model.layers.0.up_proj"] = ScaleEntry("model.layers.0.up_proj", [], torch.ones(4), loss=1.0,
                                                      identity_loss=0.0)  # a dead group has no ratio
    assert table2.search_loss_ratios(rec) == {"model.layers.0.input_layernorm": 0.25,
                                              "model.layers.1.input_layernorm": 0.5}


def test_table8_scale_only_column_searches_without_clipping(runner, settings):
    from awq_ext.calibrate import SearchRecord
    from awq_ext.config import AWQConfig

    res = table8.run(runner, settings, groups=(32, -1))
    labels = [r["label"] for r in res.rows]
    assert labels == ["fp32"] + [f"{m} g{g}" for g in (32, -1) for m in table8.METHODS]
    assert "AWQ scale only" in res.markdown_table
    for g in (32, -1):
        full = SearchRecord.load(runner.record_path(quant_cfg("awq", 3, g, settings), settings))
        scale_only = SearchRecord.load(runner.record_path(
            quant_cfg("awq", 3, g, settings, awq=AWQConfig(clip=False)), settings))
        assert full.clips and not scale_only.clips
        assert set(full.scales) == set(scale_only.scales)


def test_table5_awq_gptq_replays_the_awq_search(runner, settings):
    res = table5.run(runner, settings, bits=(3,), group=32)
    rows = {r["label"]: r for r in res.rows}
    rec = runner.record_path(quant_cfg("awq", 3, 32, settings), settings)
    assert rows["awq+gptq w3"]["replayed_record"] == rec.name and "replayed_record" not in rows["awq w3"]
    assert runner.record_path(quant_cfg("gptq", 3, 32, settings), settings) is None
    assert "AWQ + GPTQ" in res.markdown_table and all(r["ppl"] > 0 for r in res.rows)
    # Its time is the replayed search's plus its own GPTQ pass.
    r = rows["awq+gptq w3"]
    assert table5._qsec(r) == f"{r['quantize_seconds'] + r['search_seconds_original']:.0f}"
    assert table5._qsec(rows["awq w3"]) == f"{rows['awq w3']['quantize_seconds']:.0f}"


def test_calib_budget_rows_and_shared_records(runner, settings):
    grid = ((1, 32, None), (2, 32, None), (2, 16, None), (2, 32, 1))
    res = calib_budget.run(runner, settings, grid=grid)
    rows = res.rows[1:]
    assert [(r["config"]["n_samples"], r["config"]["seqlen"], r["config"].get("loss_samples")) for r in rows] \
        == list(grid)
    assert "(loss on 1)" in res.markdown_table
    # Each row calibrates on its own n x seqlen tokens, all after the evaluation region.
    assert all(r["calib_start"] >= settings.max_windows * settings.eval_seqlen for r in rows)
    assert all(r["quantize_seconds"] > 0 and r["ppl"] > 0 for r in rows)
    # A later experiment with the same AWQ search (same tokens) replays the record instead of searching.
    replay = fig7.run(runner, settings, group=64, sizes={"awq": (2,), "gptq": (2,)})
    assert "replayed_record" in next(r for r in replay.rows if r["label"] == "awq n2 pydoc")


def test_license_text_is_deduplicated(tmp_path):
    from awq_ext.analysis.texts import build_license_text

    b = build_license_text(tmp_path / "lic.txt", min_chars=1000)
    paras = [" ".join(p.split()) for p in (tmp_path / "lic.txt").read_text().split("\n\n")]
    assert len(paras) == len(set(paras)) and b.chars > 1000 and b.files
    assert not any(f.lower().endswith((".yaml", ".py")) for f in b.files)  # license texts, not code or configs


@pytest.mark.slow
def test_fig7_small(runner, settings):
    res = fig7.run(runner, settings, group=32, sizes={"awq": (2,), "gptq": (2, 4)})
    assert res.extra["png"].endswith("fig7.png")
    assert set(res.extra["penalty"]) == {"awq", "gptq"}


def test_summary_compares_directions(tmp_path):
    from awq_ext.analysis.summary import write_summary
    from awq_ext.reproduce import main

    rows = [{"label": "fp32", "config": {}, "ppl": 10.0}]
    for b, vals in ((4, dict(rtn=12.0, gptq=11.0, awq=10.5)), (3, dict(rtn=30.0, gptq=14.0, awq=15.0))):
        rows += [{"label": f"{m} w{b}", "config": {}, "ppl": v} for m, v in vals.items()]
        rows.append({"label": f"gptq-r w{b}", "config": {}, "ppl": vals["gptq"] + 1})
    (tmp_path / "table5.json").write_text(json.dumps(
        {"title": "T5", "paper": "p", "markdown_table": "|a|", "seconds": 1.0, "rows": rows,
         "settings": {"max_windows": 4, "eval_seqlen": 1024, "n_samples": 16, "seqlen": 512}}))
    (tmp_path / "DISCUSSION.md").write_text("## Discussion\nwhy\n")
    assert main(["summary", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "| W4: AWQ <= GPTQ | AWQ 10.50 vs GPTQ 11.00 | yes |" in text
    assert "| W3: AWQ <= GPTQ | AWQ 15.00 vs GPTQ 14.00 | **no** |" in text
    rows[1]["not_run"] = True  # a row that has not run yet is reported as such, not as a failure
    (tmp_path / "table5.json").write_text(json.dumps(
        {"title": "T5", "paper": "p", "markdown_table": "|a|", "seconds": 1.0, "rows": rows,
         "settings": {"max_windows": 4, "eval_seqlen": 1024, "n_samples": 16, "seqlen": 512}}))
    write_summary(tmp_path)
    assert "| W4: AWQ < RTN | rows not run | not run |" in (tmp_path / "SUMMARY.md").read_text()
    assert text.count("Not run.") == 6 and text.rstrip().endswith("why")


def test_reproduce_refuses_bad_sizes_before_loading(capsys):
    from awq_ext.reproduce import main

    assert main(["table1", "--max-windows", "0"]) == 2
    assert "--max-windows must be >= 1" in capsys.readouterr().err
    assert main(["table8", "--loss-samples", "0"]) == 2
    assert "--loss-samples must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table9"])


@pytest.mark.slow
def test_explain_measures_block_errors_on_three_texts(runner, settings):
    from awq_ext.analysis import explain

    res = explain.run(runner, settings, bits=(3,), group=32, methods=("rtn", "awq"))
    by = {r["method"]: r for r in res.rows}
    for r in by.values():
        assert set(r["block_rel_error"]) == {"calibration", "pydoc", "licenses"}
        assert all(e >= 0 for errs in r["block_rel_error"].values() for e in errs)
    # On the planted-outlier model AWQ protects the salient channels: lower error than RTN on its own data.
    assert by["awq"]["block_rel_error"]["calibration"][0] < by["rtn"]["block_rel_error"]["calibration"][0]
    assert 0 < res.extra["outlier_share"]["mlp.down_proj"] <= 1
