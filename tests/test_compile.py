"""`compile=true` runs the backbone through torch.compile without changing what it computes."""

from __future__ import annotations

import math

import pytest
from conftest import cli, fast_dev_run


def test_compiled_backbone_computes_what_the_eager_one_does(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    eager = fast_dev_run(["experiment=sentiment_quick", "compile=false"], tmp_path / "eager")
    assert not counters["stats"]["unique_graphs"]  # nothing compiled by default
    compiled = fast_dev_run(["experiment=sentiment_quick", "compile=true"], tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] > 0  # dynamo did capture the backbone
    assert compiled["status"] == "ok", compiled.get("reason")
    loss = eager["metrics"]["test/loss"]
    assert math.isfinite(loss)
    # fused kernels round differently; one Adam step carries that into the test loss
    assert compiled["metrics"]["test/loss"] == pytest.approx(loss, rel=5e-3)


@pytest.mark.parametrize("key", ["compile", "skip_done"])
def test_a_flag_that_is_not_a_boolean_is_refused_in_one_line(key):
    result = cli(f"{key}=sometimes", "trainer.fast_dev_run=true")
    assert result.returncode != 0
    assert f"{key}='sometimes' is not allowed; allowed: true or false" in result.stderr
    assert "Traceback" not in result.stderr
