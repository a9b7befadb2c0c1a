import pytest
import torch

from awq_ext.data import TokenRange, calib_blocks, calib_start, eval_windows, load_source, pydoc_text
from awq_ext.data.sources import TextSource
from awq_ext.errors import AWQInputError, OfflineError


def test_pydoc_source_is_protocol_p_text():
    import pydoc_data.topics as t

    src = load_source("pydoc")
    assert src.shared and src.eval_text == src.calib_text == pydoc_text()
    assert src.eval_text.startswith(t.topics[sorted(t.topics)[0]])


def test_eval_and_calib_never_share_tokens():
    ids = torch.arange(50_000)
    src = TextSource("t", "x", "x", shared=True)
    win, er = eval_windows(ids, 1024, 16)
    start = calib_start(src, src, er.stop)
    cal, cr = calib_blocks(ids, 16, 512, start)
    assert not er.overlaps(cr)
    assert set(win.flatten().tolist()).isdisjoint(cal.flatten().tolist())


def test_more_eval_windows_push_calibration_later():
    src = TextSource("t", "x", "x", shared=True)
    assert calib_start(src, src, 40 * 1024) == 40 * 1024
    assert calib_start(src, None, None) == 16 * 1024  # protocol region reserved even without eval


def test_distinct_sources_start_at_zero():
    a = TextSource("a", "x", "y", shared=False)
    assert calib_start(a, a, 100) == 0


def test_all_windows_on_same_text_is_refused():
    src = TextSource("t", "x", "x", shared=True)
    with pytest.raises(AWQInputError, match="--max-windows"):
        calib_start(src, src, None)


def test_not_enough_tokens():
    with pytest.raises(AWQInputError, match="only 100 remain"):
        calib_blocks(torch.arange(1100), 4, 512, 1000)


def test_windows_shape_and_range():
    win, r = eval_windows(torch.arange(5000), 1000, None)
    assert win.shape == (5, 1000) and r == TokenRange(0, 5000)


def test_file_source(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("hello world")
    assert load_source(str(p)).eval_text == "hello world"
    (tmp_path / "e.txt").write_text("  ")
    with pytest.raises(AWQInputError, match="empty"):
        load_source(str(tmp_path / "e.txt"))


def test_unknown_source():
    with pytest.raises(AWQInputError, match="unknown text source"):
        load_source("no_such_thing_xyz")


def test_hub_source_offline_is_clear(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed / not reachable
    with pytest.raises(OfflineError, match="datasets"):
        load_source("wikitext2")
