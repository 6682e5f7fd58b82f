"""Layer stacking: growth copies blocks, the zero-init variant preserves the function
exactly, optimizer moments are copied or reset, growth follows budget progress."""

from __future__ import annotations

import pytest
import torch

from seqlm.errors import ConfigError
from seqlm.training.efficient.block_hooks import selected_blocks
from seqlm.training.efficient.stacking import LayerStacking, StackingOptions, grow_blocks


def _model(tiny_gpt_factory, layers=4, **overrides):
    return tiny_gpt_factory(40, context=16, n_layer=layers, **overrides)


def _outputs(model, idx, depth):
    model.eval()
    with torch.no_grad():
        active = [i < depth for i in range(len(model.blocks))]
        with selected_blocks(model, active):
            return model(idx).logits


def test_function_preserving_growth_gives_identical_outputs(tiny_gpt_factory):
    model = _model(tiny_gpt_factory)
    idx = torch.randint(40, (3, 16), generator=torch.Generator().manual_seed(0))
    before = _outputs(model, idx, 2)
    depth = grow_blocks(model.blocks, 2, function_preserving=True)
    assert depth == 4
    after = _outputs(model, idx, 4)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # The copies are the source blocks except for their zeroed output projections.
    torch.testing.assert_close(model.blocks[2].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    assert not model.blocks[3].mlp.down.weight.any()
    assert model.blocks[1].mlp.down.weight.any()


def test_plain_growth_copies_blocks_and_changes_the_function(tiny_gpt_factory):
    model = _model(tiny_gpt_factory)
    idx = torch.randint(40, (2, 16), generator=torch.Generator().manual_seed(1))
    before = _outputs(model, idx, 2)
    grow_blocks(model.blocks, 2, function_preserving=False)
    for source, target in ((0, 2), (1, 3)):
        for a, b in zip(
            model.blocks[source].parameters(), model.blocks[target].parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            assert a.data_ptr() != b.data_ptr()
    assert not torch.allclose(_outputs(model, idx, 4), before)
    with pytest.raises(ConfigError):
        grow_blocks(model.blocks, 4, function_preserving=True)


@pytest.mark.parametrize("mode", ["copy", "reset"])
def test_optimizer_moments_are_copied_or_reset(tiny_gpt_factory, mode):
    model = _model(tiny_gpt_factory, layers=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(40, (2, 16))
    with selected_blocks(model, [True, False]):
        model(idx, idx).loss.backward()
    optimizer.step()
    grow_blocks(
        model.blocks, 1, function_preserving=True, optimizer=optimizer, optimizer_state=mode
    )
    source = model.blocks[0].attn.qkv.weight
    target = model.blocks[1].attn.qkv.weight
    if mode == "copy":
        torch.testing.assert_close(
            optimizer.state[target]["exp_avg"], optimizer.state[source]["exp_avg"]
        )
        assert optimizer.state[target]["exp_avg"].data_ptr() != (
            optimizer.state[source]["exp_avg"].data_ptr()
        )
    else:
        assert len(optimizer.state) == 0


def test_options_are_checked():
    with pytest.raises(ConfigError):
        StackingOptions(start_depth=0)
    with pytest.raises(ConfigError):
        StackingOptions(grow_at=(0.6, 0.3))
    with pytest.raises(ConfigError):
        StackingOptions(grow_at=(1.0,))
    with pytest.raises(ConfigError):
        StackingOptions(optimizer_state="keep")
    assert StackingOptions(start_depth=1, grow_at=(0.2, 0.5)).final_depth() == 4


def test_training_grows_at_budget_fractions(song_corpus, tiny_gpt_factory):
    from seqlm.corpus.loader import BatchLoader, LoaderConfig
    from seqlm.training.config import TrainConfig
    from seqlm.training.trainer import Trainer

    model = tiny_gpt_factory(song_corpus.vocab_size, context=32, n_layer=4)
    train = BatchLoader.from_corpus(song_corpus, "train", LoaderConfig(context=32, batch_size=4))
    stacking = LayerStacking(StackingOptions(start_depth=1, grow_at=(0.25, 0.5)))
    Trainer(model, TrainConfig(max_steps=8, warmup_steps=0), train, callbacks=[stacking]).fit()
    assert stacking.history == [(2, 2), (4, 4)]
    assert stacking.depth == 4

    wrong = LayerStacking(StackingOptions(start_depth=1, grow_at=(0.5,)))
    with pytest.raises(ConfigError, match="ends at 2 blocks"):
        Trainer(model, TrainConfig(max_steps=2), train, callbacks=[wrong]).fit()
    averaged = TrainConfig(max_steps=2, ema_decay=0.9)
    with pytest.raises(ConfigError, match="weight averaging"):
        Trainer(model, averaged, train, callbacks=[LayerStacking()]).fit()
    post = tiny_gpt_factory(song_corpus.vocab_size, context=32, n_layer=4, norm_placement="post")
    with pytest.raises(ConfigError, match="pre- or peri-LN"):
        Trainer(post, TrainConfig(max_steps=2), train, callbacks=[LayerStacking()]).fit()
