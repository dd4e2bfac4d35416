"""Your own training, compared by medtune: a tiny CNN on scikit-learn's digits, 5 LR methods x seeds.

    python examples/own_training.py [--epochs 8] [--seeds 0 1 2] [--output medtune-runs] [--tune TRIALS]

--tune N: the equal-budget protocol first (N search trials per method on the validation accuracy, then the
chosen settings on fresh seeds).
"""
import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import medtune


def train(config):
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(y)
    rest, test = train_test_split(range(len(y)), test_size=0.2, random_state=0)  # the same splits in every trial
    tr, val = train_test_split(rest, test_size=0.25, random_state=0)
    torch.manual_seed(config["seed"])
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(128, 10))
    # poly, schedulefree and prodigy train with their own optimizer; every other method with this SGD
    opt = medtune.make_optimizer(config["method"], model.parameters(), config,
                                 default=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9))
    batches = -(-len(tr) // 64)
    control = medtune.LRControl(opt, config, steps_per_epoch=batches)  # applies the trial's LR method to opt
    for epoch in range(control.resume(model), control.epochs):  # resume: a PBT clone continues from a checkpoint
        model.train()
        control.train()  # Schedule-Free AdamW's train mode (nothing for other optimizers)
        for batch in torch.randperm(len(tr)).split(64):
            i = torch.tensor(tr)[batch]
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
            control.batch_step()  # onecycle moves the LR after every batch
        control.eval()  # score (and checkpoint) Schedule-Free AdamW's averaged weights
        accuracy, loss = evaluate(model, x[val], y[val])
        metrics = {"accuracy": accuracy, "val_loss": loss}
        if epoch + 1 == control.epochs and not config.get("search"):  # held out: never read in a search trial
            metrics["test_accuracy"] = evaluate(model, x[test], y[test])[0]
        control.step(metrics, model=model)  # reports, checkpoints, sets the next epoch's LR


@torch.no_grad()
def evaluate(model, x, y):
    model.eval()
    out = model(x)
    return (out.argmax(1) == y).float().mean().item(), F.cross_entropy(out, y).item()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["fixed", "cosine", "greedy", "qlearning", "pbt"])
    p.add_argument("--epsilon", type=float, default=0.2, help="the Q-learning agent's exploration rate")
    p.add_argument("--output", default="medtune-runs")
    p.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                   help="search every method's own settings first, TRIALS trials each (0: no search)")
    args = p.parse_args()
    result = medtune.compare(
        train, args.methods, args.seeds, args.epochs, metric="accuracy", loss_metric="val_loss", min_lr=1e-4,
        max_lr=0.5, name="digits-own-training", output=args.output, pbt={"perturbation_interval": 3},
        qlearning={"patience": 2, "cooldown": 2, "epsilon": args.epsilon},  # a short run: decide every 2 epochs
        tune=medtune.TuningConfig(trials=args.tune, final_seeds=tuple(s + 100 for s in args.seeds))
        if args.tune else None,
    )
    print(result.text)
