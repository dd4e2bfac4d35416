"""PaSeR's core (paper 003): reward and cost by hand, patches, IoU, FLOPs, routing that runs only the chosen models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medtune.errors import InputError
from medtune.searchers.paser import (
    ExplorationSchedule,
    PaSeRConfig,
    RewardBaseline,
    Router,
    cascade,
    check_grid,
    costs,
    count_flops,
    crop_patches,
    execute_routing,
    iou,
    mc_dropout,
    model_costs,
    patch_reward,
    random_routing,
    reinforce_loss,
    reinforce_step,
    routed_inference,
    run_patch_model,
    sample_actions,
    single_model,
    split_patches,
    stitch_patches,
    table_rewards,
)

torch.set_num_threads(1)


def one_line_error(func, *args, match: str, **kwargs) -> str:
    """Call ``func`` expecting an InputError (a ValueError) of one line containing every ``|``-separated part."""
    with pytest.raises(ValueError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, InputError)
    assert "\n" not in message, message
    for part in match.split("|"):
        assert part in message, f"{part!r} not in {message!r}"
    return message


class Counted(nn.Module):
    """Wraps a model; counts forward calls and the batch size of each."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.model(x)


def conv_model(seed: int, dropout: float = 0.0) -> nn.Module:
    """A deterministic per-pixel "segmentation model": logits (n, 2, h, w)."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Conv2d(4, 2, 1))


class FixedRouter(nn.Module):
    """A router that always picks ``choice`` (B, P) actions, whatever its input."""

    def __init__(self, choice: torch.Tensor, n_actions: int = 3) -> None:
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(choice, n_actions).float() * 10)
        self.calls = 0

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits.expand(s.shape[0], -1, -1)


# --------------------------------------------------------------------------- reward and cost


def test_reward_matches_eq2_by_hand():
    # (1 - 0.5) * (0.9 - 0.6) - 0.5 * 0.94 = 0.15 - 0.47
    assert float(patch_reward(torch.tensor(0.9), torch.tensor(0.6), 0.94, 0.5)) == pytest.approx(-0.32)
    # lam = 0: accuracy only; lam = 1: cost only
    assert float(patch_reward(torch.tensor(0.9), torch.tensor(0.6), 0.94, 0.0)) == pytest.approx(0.3)
    assert float(patch_reward(torch.tensor(0.9), torch.tensor(0.6), 0.06, 1.0)) == pytest.approx(-0.06)
    # elementwise over (B, P), keeping f0 (same IoU, cost 0) earns exactly 0
    r = patch_reward(torch.tensor([[0.5, 1.0]]), torch.tensor([[0.5, 0.2]]), torch.tensor([0.0, 0.25]), 0.2)
    assert r[0].tolist() == pytest.approx([0.0, 0.8 * 0.8 - 0.2 * 0.25])


def test_cost_is_the_share_of_all_parameters_with_f0_free():
    # The public code's model sizes: 16,571 / 1,080,595 / 17,275,459 parameters.
    c = model_costs([16_571, 1_080_595, 17_275_459])
    total = 16_571 + 1_080_595 + 17_275_459
    assert c.tolist() == pytest.approx([0.0, 1_080_595 / total, 17_275_459 / total])
    assert c.tolist() == pytest.approx([0.0, 0.058815, 0.940283], abs=1e-6)


def test_costs_count_parameters_or_measured_flops():
    f0, f1, f2 = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 5, padding=2)
    # parameters: 2+2=4, 18+2=20, 50+2=52 -> total 76
    assert costs([f0, f1, f2], "params").tolist() == pytest.approx([0.0, 20 / 76, 52 / 76])
    # FLOPs on one 1x4x4 patch: 2 * Cin * Cout * k * k * 16 -> 64, 576, 1600 (biases not counted)
    assert costs([f0, f1, f2], "flops", (1, 4, 4)).tolist() == pytest.approx([0.0, 576 / 2240, 1600 / 2240])


def test_flop_count_of_a_conv_layer_matches_the_analytic_figure():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    x = torch.randn(5, 3, 17, 17)
    out, flops = count_flops(conv, x)
    h_out = (17 + 2 * 1 - 3) // 2 + 1
    assert out.shape == (5, 8, h_out, h_out)
    assert flops == 2 * 3 * 8 * 3 * 3 * h_out * h_out * 5


# --------------------------------------------------------------------------- patches and IoU


@pytest.mark.parametrize("grid", [1, 2, 4, 8])
def test_split_and_stitch_round_trip_exactly(grid):
    x = torch.randn(3, 2, 16, 16)
    patches = split_patches(x, grid)
    assert patches.shape == (3, grid * grid, 2, 16 // grid, 16 // grid)
    assert torch.equal(stitch_patches(patches, grid), x)


def test_patches_are_row_major():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    patches = split_patches(x, 4)
    assert torch.equal(patches[1, 6], x[1, :, 2:4, 4:6])  # patch 6 = row 1, col 2
    assert torch.equal(patches[0, 15], x[0, :, 6:8, 6:8])


def test_crops_hold_the_patch_in_their_centre_and_mirror_at_the_border():
    x = torch.randn(2, 1, 8, 8)
    crops = crop_patches(x, 2, margin=2)
    assert crops.shape == (2, 4, 1, 8, 8)
    assert torch.equal(crops[:, :, :, 2:-2, 2:-2], split_patches(x, 2))          # centre = the patch
    assert torch.equal(crops[:, 3, :, :6, :2], x[:, :, 2:8, 2:4])                # left context of patch 3
    assert torch.equal(crops[:, 3, :, 6, 2:6], x[:, :, 6, 4:8])                  # below the image: reflected row 6
    assert torch.equal(crops[:, 0, :, 0, 2:6], x[:, :, 2, 0:4])                  # above the image: reflected row 2
    assert torch.equal(crop_patches(x, 2, margin=0), split_patches(x, 2))


def test_a_patch_model_with_margin_returns_the_patch_pixels_only():
    model = nn.Conv2d(1, 2, 3, padding=1)
    x = torch.randn(1, 1, 8, 8)
    crops = crop_patches(x, 2, margin=1).flatten(0, 1)
    out = run_patch_model(model, crops, margin=1)
    assert out.shape == (4, 2, 4, 4)
    # with one pixel of real context a 3x3 convolution gives, inside the image, exactly the whole-image output
    full = split_patches(model(x), 2)[0]
    assert torch.allclose(out[3, :, :3, :3], full[3, :, :3, :3], atol=1e-6)
    assert torch.allclose(out[0, :, 1:, 1:], full[0, :, 1:, 1:], atol=1e-6)


def test_iou_per_image_and_patch_with_empty_union_one():
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, 0, :2] = 1          # patch 0 (top-left 2x2): 2 predicted pixels
    target[0, 0, 0] = 1         # 1 true pixel, inside the prediction
    target[0, 3, 3] = 1         # patch 3 (bottom-right): 1 true pixel, missed
    assert iou(pred, target).tolist() == pytest.approx([1 / 3])              # 1 / |{2 pred} u {2 true}|
    assert iou(pred, target, grid=2)[0].tolist() == pytest.approx([0.5, 1.0, 1.0, 0.0])
    assert iou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)).tolist() == [1.0, 1.0]   # both empty: perfect


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_lam_outside_unit_interval_is_one_line(lam):
    one_line_error(PaSeRConfig, lam=lam, match=f"lam={lam!r}|[0, 1]")


def test_grid_that_does_not_divide_the_image_is_one_line():
    one_line_error(check_grid, 32, 5, match="grid=5|image size 32|1, 2, 4, 8, 16, 32")
    check_grid(32, 4)  # fine
    one_line_error(check_grid, 32, 4, 9, match="margin=9|8-pixel patch|<= 8")


@pytest.mark.parametrize("grid", [0, -2])
def test_empty_grid_is_one_line(grid):
    one_line_error(check_grid, 32, grid, match=f"grid={grid}|>= 1")
    one_line_error(PaSeRConfig, grid=grid, match=f"grid={grid}|>= 1")


def test_other_config_errors_name_field_and_fix():
    one_line_error(PaSeRConfig, cost="param", match="cost='param'|did you mean 'params'")
    one_line_error(PaSeRConfig, T=0, match="T=0|>= 1")
    one_line_error(PaSeRConfig, epsilon_start=1.2, match="epsilon_start=1.2|[0, 1]")
    one_line_error(PaSeRConfig, cascade_quantiles=(0.5,), match="cascade_quantiles")
    one_line_error(PaSeRConfig, margin=-1, match="margin=-1|>= 0")
    assert PaSeRConfig(lam=0).lam == 0 and PaSeRConfig(lam=1).lam == 1


# --------------------------------------------------------------------------- MC dropout and the router


def test_mc_dropout_gives_mean_probability_and_entropy():
    x = torch.randn(2, 1, 8, 8)
    deterministic = conv_model(0)
    prob, entropy = mc_dropout(deterministic, x, T=3)
    p = torch.softmax(deterministic(x), dim=1)[:, 1]
    assert prob.shape == entropy.shape == (2, 8, 8)
    assert torch.allclose(prob, p, atol=1e-6)
    assert torch.allclose(entropy, -(p * p.log() + (1 - p) * (1 - p).log()), atol=1e-5)
    counted = Counted(conv_model(0, dropout=0.5))
    torch.manual_seed(0)
    prob, entropy = mc_dropout(counted, x, T=7)
    assert counted.batches == [2] * 7
    assert float(entropy.min()) >= 0 and float(entropy.max()) <= math.log(2) + 1e-6
    single, _ = mc_dropout(counted, x, T=1)
    assert not torch.allclose(prob, single)  # dropout really is on


@pytest.mark.parametrize("grid,size", [(4, 32), (2, 32), (1, 8), (3, 12)])
def test_router_gives_logits_per_patch_and_action(grid, size):
    router = Router(grid, 3, width=8)
    assert router(torch.randn(5, 2, size, size)).shape == (5, grid * grid, 3)


# --------------------------------------------------------------------------- REINFORCE


def test_exploration_schedule_is_linear():
    s = ExplorationSchedule(0.3, 0.05, 6)
    assert [round(s.epsilon(e), 6) for e in range(6)] == [0.3, 0.25, 0.2, 0.15, 0.1, 0.05]
    assert s.epsilon(10) == pytest.approx(0.05) and ExplorationSchedule(0.3, 0.05, 1).epsilon(0) == 0.3


def test_sampling_explores_with_probability_epsilon():
    logits = torch.tensor([[[0.0, 0.0, 50.0]]]).expand(200, 16, 3)   # the policy always says f2
    g = torch.Generator().manual_seed(0)
    assert (sample_actions(logits, 0.0, g) == 2).all()
    explored = sample_actions(logits, 1.0, g)
    counts = torch.bincount(explored.reshape(-1), minlength=3).float() / explored.numel()
    assert counts.tolist() == pytest.approx([1 / 3] * 3, abs=0.03)


def test_reward_baseline_starts_at_first_batch_then_averages():
    b = RewardBaseline(0.9)
    assert b.update(torch.tensor([1.0, 3.0])) == 2.0 and b.value == 2.0
    assert b.update(torch.tensor([12.0])) == 2.0 and b.value == pytest.approx(0.9 * 2 + 0.1 * 12)


def test_reinforce_loss_gradient_favours_actions_with_positive_advantage():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    actions = torch.tensor([[2, 0]])
    reinforce_loss(logits, actions, torch.tensor([[1.0, -1.0]]), baseline=0.0).backward()
    step = -logits.grad  # a gradient-descent step
    assert step[0, 0, 2] > 0 and step[0, 0, 0] < 0       # rewarded action 2 of patch 0 goes up
    assert step[0, 1, 0] < 0 and step[0, 1, 1] > 0       # punished action 0 of patch 1 goes down


def _train_toy_router(lam: float, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A router on 16 images x 4 patches where f1 (action 1) is perfect and f0, f2 are wrong everywhere."""
    torch.manual_seed(0)
    router = Router(grid=2, width=8)
    state = torch.rand(16, 2, 8, 8)
    table = torch.zeros(16, 4, 3)
    table[..., 1] = 1.0
    cost = torch.tensor([0.0, 0.05, 0.9])
    before = torch.softmax(router(state), -1).mean(dim=(0, 1)).detach()
    opt = torch.optim.Adam(router.parameters(), lr=1e-2)
    baseline, g = RewardBaseline(0.9), torch.Generator().manual_seed(0)
    for _ in range(steps):
        stats = reinforce_step(router, opt, state, table, cost, lam=lam, epsilon=0.2, baseline=baseline, generator=g)
    after = torch.softmax(router(state), -1).mean(dim=(0, 1)).detach()
    assert torch.isfinite(after).all()
    return before, after, stats


def test_reinforce_steps_move_probability_to_the_rewarded_action():
    before, after, stats = _train_toy_router(lam=0.0)       # accuracy only: f1 earns +1, the others 0
    assert before[1] < 0.5 and after[1] > 0.9, (before, after)
    assert stats["share_f1"] > 0.75                         # sampled with 20 % exploration


def test_at_lam_one_only_thrift_is_rewarded_and_f0_wins():
    before, after, _ = _train_toy_router(lam=1.0)           # reward = -cost: f0 (free) is best
    assert before[0] < 0.5 and after[0] > 0.9, (before, after)


def test_explored_actions_are_importance_weighted():
    logits = torch.log(torch.tensor([[[0.98, 0.01, 0.01]]])).requires_grad_(True)
    actions, rewards = torch.tensor([[1]]), torch.tensor([[-1.0]])
    plain = reinforce_loss(logits, actions, rewards)
    weighted = reinforce_loss(logits, actions, rewards, epsilon=0.3)
    # w = pi / mu = 0.01 / (0.7 * 0.01 + 0.3 / 3) = 0.01 / 0.107
    assert float(weighted.detach()) == pytest.approx(float(plain.detach()) * 0.01 / 0.107, rel=1e-4)
    assert float(reinforce_loss(logits, actions, rewards, epsilon=0.0).detach()) == pytest.approx(float(plain.detach()))


def test_table_rewards_equal_rewards_of_actually_routed_predictions():
    """Looking the reward up in a per-patch IoU table equals running the routing (the models are frozen)."""
    torch.manual_seed(1)
    models = [conv_model(0), conv_model(1), conv_model(2)]
    x = torch.rand(6, 1, 8, 8)
    y = (torch.rand(6, 8, 8) > 0.6).long()
    f0_pred = models[0](x).argmax(1)
    preds = [f0_pred] + [execute_routing(models, x, torch.full((6, 4), k), 2, f0_pred) for k in (1, 2)]
    table = torch.stack([iou(p, y, grid=2) for p in preds], dim=2)
    actions = torch.randint(0, 3, (6, 4))
    cost = torch.tensor([0.0, 0.1, 0.8])
    routed = execute_routing(models, x, actions, 2, f0_pred)
    expected = patch_reward(iou(routed, y, grid=2), iou(f0_pred, y, grid=2), cost[actions], 0.3)
    assert torch.allclose(table_rewards(table, actions, cost, 0.3), expected)


# --------------------------------------------------------------------------- routed inference and baselines


def _counted_models() -> list[Counted]:
    return [Counted(conv_model(0, dropout=0.5)), Counted(conv_model(1)), Counted(conv_model(2))]


def test_routed_inference_runs_only_the_chosen_models_on_the_chosen_patches():
    models = _counted_models()
    x = torch.rand(3, 1, 16, 16)
    choice = torch.tensor([0, 1, 1, 0] * 4)        # 8 of 16 patches to f1, none to f2
    router = FixedRouter(choice[None])
    seg = routed_inference(models, router, x, grid=4, T=5)
    assert models[0].batches == [3] * 5             # f0: T passes on whole images
    assert models[1].batches == [3 * 8]             # f1: one call, exactly the chosen patches
    assert models[2].batches == []                  # f2: never
    assert router.calls == 1
    assert torch.equal(seg.actions, choice.expand(3, -1))
    # the f1 patches hold f1's own prediction on that patch
    patches = split_patches(x, 4)
    pred_patches = split_patches(seg.pred[:, None], 4)
    assert torch.equal(pred_patches[:, 1, 0], models[1].model(patches[:, 1]).argmax(1))
    # FLOPs as executed: T f0 passes + router + f1 on 8 patches per image
    f0_flops = count_flops(models[0].model, x)[1]
    f1_flops = count_flops(models[1].model, patches[:, choice == 1].flatten(0, 1))[1]
    router_flops = count_flops(router, x)[1]
    assert seg.flops == 5 * f0_flops + f1_flops + router_flops


def test_routed_inference_with_margin_runs_the_models_on_crops():
    models = _counted_models()
    x = torch.rand(2, 1, 16, 16)
    seg = routed_inference(models, FixedRouter(torch.full((1, 16), 2)), x, grid=4, T=1, margin=2)
    assert models[2].batches == [32]
    crops = crop_patches(x, 4, 2).flatten(0, 1)                      # (32, 1, 8, 8): 4x4 patches + 2 each side
    expected = run_patch_model(models[2].model, crops, 2).argmax(1).reshape(2, 16, 1, 4, 4)
    assert torch.equal(seg.pred, stitch_patches(expected, 4)[:, 0])
    f2_flops = count_flops(models[2].model, crops)[1]
    assert seg.flops == count_flops(models[0].model, x)[1] + count_flops(FixedRouter(torch.zeros(1, 16).long()), x)[1] \
        + f2_flops
    assert f2_flops == 4 * count_flops(models[2].model, split_patches(x, 4).flatten(0, 1))[1]   # (8/4)^2 more pixels


def test_sending_every_patch_to_f2_costs_what_large_costs_plus_f0_and_router():
    models = _counted_models()
    x = torch.rand(2, 1, 16, 16)
    all_f2 = routed_inference(models, FixedRouter(torch.full((1, 16), 2)), x, grid=4, T=2)
    large = single_model(models, 2, x, grid=4)
    assert models[1].batches == []
    assert torch.equal(all_f2.pred, large.pred)
    assert all_f2.flops == large.flops + 2 * count_flops(models[0].model, x)[1]
    small = single_model(models, 0, x, grid=4)
    assert small.flops == count_flops(models[0].model, x)[1] and small.actions.eq(0).all()


def test_cascade_runs_models_in_sequence_on_unsure_patches():
    x = torch.rand(2, 1, 16, 16)
    models = _counted_models()
    seg = cascade(models, x, grid=4, T=3, t1=math.inf, t2=math.inf)  # nobody is unsure: f0 only
    assert models[1].batches == [] and models[2].batches == [] and seg.actions.eq(0).all()
    models = _counted_models()
    seg = cascade(models, x, grid=4, T=3, t1=-1.0, t2=-1.0)          # everyone is unsure: all the way to f2
    assert models[1].batches == [32] and models[2].batches == [32] and seg.actions.eq(2).all()
    assert torch.equal(seg.pred, single_model(models, 2, x, grid=4).pred)


def test_random_routing_follows_the_given_shares():
    models = _counted_models()
    x = torch.rand(4, 1, 16, 16)
    seg = random_routing(models, x, 4, shares=[0.0, 1.0, 0.0], generator=torch.Generator().manual_seed(0))
    assert seg.actions.eq(1).all() and models[2].batches == [] and models[1].batches == [64]
    seg = random_routing(_counted_models(), torch.rand(100, 1, 16, 16), 4, shares=[0.5, 0.3, 0.2],
                         generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(seg.actions.reshape(-1), minlength=3).float() / seg.actions.numel()
    assert counts.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.03)


# --------------------------------------------------------------------------- a tiny study, end to end


def test_tiny_study_runs_end_to_end_with_every_method():
    from medtune.trainables.paser_data import PaSeRDataConfig, load_paser_data
    from medtune.trainables.paser_models import (
        METHODS,
        PaSeRModelsConfig,
        evaluate,
        load_models,
        pretrain_models,
        train_router,
    )

    data = load_paser_data(PaSeRDataConfig(n_images=24, canvas=16, val_fraction=0.2, test_fraction=0.25))
    mcfg = PaSeRModelsConfig(f0_channels=(4, 8), f1_channels=(4, 8), f2_channels=(8, 16), num_res_units=1,
                             pretrain_epochs=1, distill_epochs=1, batch_size=8)
    cfg = PaSeRConfig(grid=2, margin=2, lam=0.5, T=2, router_epochs=2, batch_size=8, finetune_epochs=1,
                      router_width=4)
    states = pretrain_models(data, mcfg, seed=0, paser=cfg)
    assert set(states) == {"f0", "f1", "f2", "history"}
    models = load_models(states, mcfg, data.image_size, cfg)
    result = train_router(models, data, cfg, seed=0)
    assert [row["phase"] for row in result.curve] == ["router", "router", "finetune"]
    assert result.models[1] is not models[1]                       # fine-tuned copies
    assert sum(result.val_shares) == pytest.approx(1.0)
    for method in METHODS:
        out = evaluate(method, result.models if method in ("paser", "random") else models, data, cfg,
                       router=result.router, shares=result.val_shares)
        assert 0 <= out["iou"] <= 1 and out["gflops"] > 0
        assert out["iou_per_gflop"] == pytest.approx(out["iou"] / out["gflops"])
        assert out["share_f0"] + out["share_f1"] + out["share_f2"] == pytest.approx(1.0)
        assert "iou_unseen" in out and "iou_drop_pct" in out
    one_line_error(evaluate, "paser", models, data, cfg, match="router")
    one_line_error(evaluate, "larg", models, data, cfg, match="method='larg'|did you mean 'large'")


def test_models_that_do_not_fit_the_patch_are_one_line():
    from medtune.trainables.paser_models import PaSeRModelsConfig, build_models

    # 32 / 4 + 2 * 2 = 12-pixel crops: 3 levels (12 -> 6 -> 3) fit, 4 levels do not
    build_models(PaSeRModelsConfig(f1_channels=(4, 8, 16)), 32, PaSeRConfig(grid=4, margin=2))
    one_line_error(build_models, PaSeRModelsConfig(f1_channels=(4, 8, 16, 32)), 32, PaSeRConfig(grid=4, margin=2),
                   match="f1_channels=[4, 8, 16, 32]|12-pixel|at most 3 levels")
    one_line_error(PaSeRModelsConfig, size="tiny", match="size='tiny'|cpu, paper")
