"""Model registry and networks: shapes for every task, config round trip, paper key layout."""

from __future__ import annotations

import pytest
import torch

from sei.errors import SeiUserError
from sei.models import (
    DEFAULT_CPU_MODEL,
    DEFAULT_GPU_MODEL,
    create_model,
    list_models,
    register_model,
    registry,
)
from sei.models.common import learned_state_dict, load_state_dict_checked

torch.set_num_threads(1)

SMALL = {  # small overrides keep every registered family fast to run in tests
    "swinir": {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4},
    "swinir-light": {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4},
    "swinir-tiny": {"embed_dim": 12, "depths": [1], "num_heads": [2]},
    "unet-small": {"channels": 8},
    "unet-base": {"channels": 8},
    "dncnn-small": {"channels": 8, "depth": 3},
}
TASKS = [("deblurring", None), ("sr", 2), ("sr", 3), ("sr", 4)]


def test_registry_lists_every_family_and_the_defaults():
    assert set(list_models()) == set(SMALL)
    assert {DEFAULT_CPU_MODEL, DEFAULT_GPU_MODEL} <= set(list_models())
    assert list_models("swinir*") == ["swinir", "swinir-light", "swinir-tiny"]


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize(("task", "factor"), TASKS, ids=[f"{t}{f or ''}" for t, f in TASKS])
def test_odd_non_square_inputs_give_the_target_size(name, task, factor):
    model = create_model(name, task=task, sr_factor=factor, **SMALL[name])
    y = torch.rand(2, 3, 13, 10)
    scale = factor or 1
    with torch.no_grad():
        out = model(y)
        out_physics = model(y, None)
    assert out.shape == (2, 3, 13 * scale, 10 * scale)
    assert torch.equal(out_physics, out)  # deepinv's model(y, physics) calling convention


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sei_config_rebuilds_the_same_architecture(name):
    model = create_model(name, task="sr", sr_factor=3, **SMALL[name])
    twin = create_model(**model.sei_config)
    assert twin.sei_config == model.sei_config
    assert {k: v.shape for k, v in learned_state_dict(twin).items()} == {
        k: v.shape for k, v in learned_state_dict(model).items()
    }


@pytest.mark.parametrize("name", ["unet-small", "dncnn-small"])
def test_cpu_nets_start_from_the_baseline(name):
    """The zero-initialised head makes an untrained CPU net return y (deblurring)."""
    y = torch.rand(1, 3, 16, 20)
    assert torch.equal(create_model(name, **SMALL[name])(y), y)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize(("task", "factor"), [("deblurring", None), ("sr", 2)])
def test_gradients_reach_every_parameter(name, task, factor):
    """Every parameter gets a non-zero gradient: after one optimizer step (a zero-initialised last
    layer blocks the gradient of everything before it until it has moved)."""
    torch.manual_seed(0)
    model = create_model(name, task=task, sr_factor=factor, **SMALL[name])
    scale = factor or 1
    y, x = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16 * scale, 16 * scale)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (model(y) - x).square().mean().backward()
        optimizer.step()
    optimizer.zero_grad()
    (model(y) - x).square().mean().backward()
    silent = [key for key, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, silent


def test_unknown_name_lists_close_matches():
    with pytest.raises(SeiUserError, match="did you mean swinir-light"):
        create_model("swinir_lite")


def test_unknown_option_and_bad_task_are_user_errors():
    with pytest.raises(SeiUserError, match="has no option 'channel'"):
        create_model("unet-small", channel=3)
    with pytest.raises(SeiUserError, match="sr_factor=2 applies to the sr task only"):
        create_model("unet-small", task="deblurring", sr_factor=2)
    with pytest.raises(SeiUserError, match="unsupported sr factor 5"):
        create_model("unet-small", task="sr", sr_factor=5)


def test_unknown_option_error_lists_the_options():
    with pytest.raises(SeiUserError, match="its options are channels, levels, blocks$"):
        create_model("unet-base", channel=3)


def test_entrypoint_options_default_to_the_constructor(monkeypatch):
    """An option an entrypoint does not change is the constructor's default: change the default and
    the entrypoint follows (no second copy of it in the registry)."""
    monkeypatch.setattr(registry, "_ENTRYPOINTS", {})

    def net(task="deblurring", sr_factor=None, width=7, shape=(1, 2)):
        return torch.nn.Identity()

    register_model("net", net)
    register_model("net-wide", net, width=9)
    assert {k: v for k, v in create_model("net").sei_config.items() if k in ("width", "shape")} == {
        "width": 7,
        "shape": [1, 2],  # as a weights file's JSON metadata stores it
    }
    assert create_model("net-wide").sei_config["width"] == 9
    assert create_model("net-wide", width=3).sei_config["width"] == 3
    net.__defaults__ = ("deblurring", None, 5, (1, 2))
    monkeypatch.setattr(registry, "_ENTRYPOINTS", {})
    register_model("net", net)
    assert create_model("net").sei_config["width"] == 5


def test_registration_refuses_unknown_and_undefaulted_options(monkeypatch):
    monkeypatch.setattr(registry, "_ENTRYPOINTS", {})

    def net(task, sr_factor, width=7):
        return torch.nn.Identity()

    def bare(task, sr_factor, width):
        return torch.nn.Identity()

    with pytest.raises(ValueError, match="net has no option widht"):
        register_model("typo", net, widht=9)
    with pytest.raises(ValueError, match="option 'width' has no default"):
        register_model("bare", bare)
    register_model("net", net)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("net", net)


def test_paper_swinir_configuration():
    """The paper's network: 11.5 M parameters, global residual for deblurring, SwinIR key names."""
    model = create_model("swinir", task="sr", sr_factor=2)
    assert 11.5e6 < sum(p.numel() for p in model.parameters()) < 12e6
    keys = set(model.state_dict())
    for key in (
        "conv_first.weight",
        "layers.5.residual_group.blocks.5.attn.qkv.weight",
        "conv_after_body.weight",
        "conv_before_upsample.0.weight",
        "upsample.0.weight",
        "conv_last.weight",
    ):
        assert key in keys
    deblur = create_model("swinir", task="deblurring", **SMALL["swinir"])
    with torch.no_grad():
        deblur.conv_last.weight.zero_()
        deblur.conv_last.bias.zero_()
    y = torch.rand(1, 3, 9, 11)
    assert torch.allclose(deblur(y), y, atol=1e-6)  # x_hat = y + body(y), body silenced


def test_paper_state_dict_loads_into_swinir_whatever_its_img_size():
    """A state dict in the original SwinIR layout (from a model built for another img_size, so its
    attention masks differ) loads; a state dict for another factor is refused with the key names."""
    source = create_model("swinir", task="sr", sr_factor=2, img_size=48, **SMALL["swinir"])
    state = {"params": source.state_dict()}  # the paper's checkpoint layout
    target = create_model("swinir", task="sr", sr_factor=2, **SMALL["swinir"])
    load_state_dict_checked(target, state, "paper.pt")
    y = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        assert torch.allclose(source.eval()(y), target.eval()(y), atol=1e-6)
    other = create_model("swinir", task="sr", sr_factor=3, **SMALL["swinir"])
    with pytest.raises(SeiUserError, match="wrong shape"):
        load_state_dict_checked(other, state, "paper.pt")
