"""PBT's exploit copies the donor's hyperparameters, never the member's own seed."""

from medtune.searchers.pbt_scheduler import MemberPBT, OwnLRPBT


class _Trial:
    def __init__(self, config):
        self.config = config


def test_an_exploiting_member_keeps_its_own_seed_and_takes_the_donor_s_lr():
    for cls in (MemberPBT, OwnLRPBT):
        pbt = cls(time_attr="training_iteration", metric="dice", mode="max", perturbation_interval=2,
                  hyperparam_mutations={"lr": [0.1, 0.2]}, resample_probability=0.0)
        new, _ = pbt._get_new_config(_Trial({"seed": 1, "lr": 0.1, "method": "pbt"}),
                                     _Trial({"seed": 0, "lr": 0.2, "method": "pbt"}))
        assert new["seed"] == 1 and new["method"] == "pbt"
        assert new["lr"] in (0.1, 0.2)  # explored from the donor's 0.2: a neighbour in the list, or itself
