"""`ponder bench --calibrate` without the real engines: rates -> weights -> file -> the server reads them.

The measurement itself runs here on the fake engines (their timings mean nothing, their token counts do);
on the real engines it is run by hand (`ponder bench --calibrate`), which needs both cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.cost import WEIGHTS_FILE, CostWeights
from evaluation.calibration import calibrate, decode_rate, hit_rate, median_rates, weights_of
from ponder.cli import main
from server.engines import Engines
from server.main import create_app
from server.settings import ServerSettings

RATES = {
    "generated": 3500.0,
    "prefilled": 9450.0,
    "cached_prompt": 175_000.0,
    "scored": 9450.0,
    "cached_scored": 70_000.0,
}


def test_a_weight_is_the_generated_rate_over_its_kinds_rate() -> None:
    weights = weights_of(RATES, "by hand")
    assert weights == CostWeights(
        prefilled=0.3704, cached_prompt=0.02, scored=0.3704, cached_scored=0.05, measured="by hand"
    )
    with pytest.raises(ValueError, match="cached_scored"):
        CostWeights.from_rates(
            3500.0, {k: v for k, v in RATES.items() if k not in ("generated", "cached_scored")}, "x"
        )
    with pytest.raises(ValueError, match="positive"):
        weights_of({**RATES, "scored": 0.0}, "x")


def test_a_pass_is_timed_net_of_the_other_kind_it_also_computed() -> None:
    # 1,000 tokens decoded in 1.5 s, of which 2,000 prompt tokens took 0.5 s at 4,000 tokens/s
    assert decode_rate(1000, 2000, 1.5, 4000.0) == pytest.approx(1000.0)
    # 900 cache hits and 100 recomputed tokens (0.1 s at 1,000/s) in 0.1009 s: the hits took 0.0009 s
    assert hit_rate(900, 100, 0.1009, 1000.0) == pytest.approx(1_000_000.0)
    # a pass that took less than its uncached part alone: the hits still took a thousandth of it
    assert hit_rate(900, 100, 0.05, 1000.0) == pytest.approx(900 / 0.05e-3)


def test_a_cache_that_never_hit_takes_the_uncached_kinds_rate() -> None:
    repeats = [
        {"generated": 10.0, "prefilled": 30.0, "cached_prompt": 500.0, "scored": 40.0, "cached_scored": None},
        {"generated": 12.0, "prefilled": 20.0, "cached_prompt": 700.0, "scored": 60.0, "cached_scored": None},
        {"generated": 11.0, "prefilled": 25.0, "cached_prompt": None, "scored": 50.0, "cached_scored": None},
    ]
    rates, missing = median_rates(repeats)
    assert rates == {
        "generated": 11.0,
        "prefilled": 25.0,
        "scored": 50.0,
        "cached_prompt": 600.0,
        "cached_scored": 50.0,
    }
    assert missing == ["cached_scored"]


async def test_calibration_writes_the_weights_the_server_then_serves(tmp_path: Path) -> None:
    models = tmp_path / "models"
    engines = Engines(FakeEngine(), FakePRM(prefix_cache=True))
    weights = await calibrate(engines, models / WEIGHTS_FILE, "the fakes", sequences=8, repeats=2)
    assert weights.measured is not None and weights.measured.startswith(
        "ponder bench --calibrate on the fakes"
    )
    assert CostWeights.load(models / WEIGHTS_FILE) == weights
    written = CostWeights.if_measured(models / WEIGHTS_FILE)
    assert written == weights
    data = json.loads((models / WEIGHTS_FILE).read_text())
    assert data["generated"] == 1.0 and set(data["rates"]) == {
        "generated",
        "prefilled",
        "cached_prompt",
        "scored",
        "cached_scored",
    }
    assert data["no_cache_hits"] == [] and len(data["passes"]) == 2
    for run in data["passes"]:  # the first passes read nothing cached, the second ones mostly cached
        assert run["prefill"]["cached"] == 0 and run["score"]["cached"] == 0
        assert run["prefill_again"]["cached"] > run["prefill_again"]["prompt"] / 2
        assert run["score_again"]["cached"] > run["score_again"]["scored"] / 2
        assert run["decode"]["generated"] >= 8
    app = create_app(ServerSettings(models=models), FakeEngine(), FakePRM())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = {"model": "ponder-default", "messages": [{"role": "user", "content": "3 7 9 13 -> 24"}]}
        answer = (await client.post("/v1/chat/completions", json={**body, "search": {"budget": 600}})).json()
    assert answer["search"]["cost_weights"] == weights.as_dict()


async def test_a_prm_without_a_prefix_cache_prices_hits_as_misses(tmp_path: Path) -> None:
    weights = await calibrate(
        Engines(FakeEngine(), FakePRM()), tmp_path / "w.json", "fakes", sequences=4, repeats=1
    )
    assert weights.cached_scored == weights.scored
    assert CostWeights.load(tmp_path / "w.json") == weights


def test_calibrating_a_named_pair_needs_a_file_to_write(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--calibrate", "--policy", "some/policy", "--prm", "some/prm"]) == 2
    assert "--weights-out" in capsys.readouterr().err
