import math

import torch

from awq_ext.eval import perplexity
from tests.conftest import tiny_llama


def test_matches_hf_loss():
    m = tiny_llama()
    win = torch.randint(0, 256, (3, 40), generator=torch.Generator().manual_seed(0))
    res = perplexity(m, win, progress=False)
    with torch.no_grad():
        losses = [m(w.unsqueeze(0), labels=w.unsqueeze(0)).loss.item() for w in win]
    assert math.isclose(res.ppl, math.exp(sum(losses) / 3), rel_tol=1e-5)
    assert res.n_tokens == 3 * 39 and res.n_windows == 3
