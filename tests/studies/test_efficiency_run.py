"""efficiency_options: the command line's strings to EfficiencyOptions."""

from __future__ import annotations

import pytest

from seqlm.errors import ConfigError
from seqlm.studies.efficiency import EfficiencyOptions
from seqlm.studies.efficiency_run import efficiency_options


def test_nested_and_model_settings_reach_their_fields() -> None:
    sets = ["model.n_layer=4", "lr=0.002", "stacking.grow_at=[0.25, 0.5]", "pld.theta_bar=0.6"]
    options = efficiency_options("baseline, pld,", 2, "100steps", "flops", sets)
    defaults = EfficiencyOptions()
    assert options.methods == ("baseline", "pld") and options.seeds == 2
    assert options.model == {**defaults.model, "n_layer": 4}
    assert options.lr == 0.002
    assert options.stacking.grow_at == (0.25, 0.5)
    assert options.pld.theta_bar == 0.6
    assert options.selective_backprop == defaults.selective_backprop


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["speed=3"], "unknown efficiency options \\['speed'\\]"),
        (["model=3"], "--set model needs model.<field>=value"),
        (["pld=1"], "--set pld needs pld.<field>=value"),
    ],
)
def test_bad_settings_are_named(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        efficiency_options("baseline", 1, "1", "flops", sets)
