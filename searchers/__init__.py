"""What decides: the Q-learning LR agent (a pure core) and its Ray Tune scheduler, the baseline LR schedules (every
LR method one record of :mod:`medtune.searchers.lr_methods`),
GreedyLR, the effort controller and its episodic memory, PBT, the DDPG sample selector and the query strategies
(BADGE and TypiClust in their own files),
the APGA policy update and the PaSeR router.

The cores import neither Ray nor MLflow; ``QLearningLRScheduler``, ``make_pbt`` and the mailbox are the Ray
adapters. Every name loads on first use, so ``import medtune.searchers`` is light.
"""

from medtune.util import lazy_exports

_PUBLIC = {
    "QLearningConfig": "medtune.searchers.qlearning_agent",
    "QLearningLRAgent": "medtune.searchers.qlearning_agent",
    "QTable": "medtune.searchers.qlearning_agent",
    "analyze_trend": "medtune.searchers.qlearning_agent",
    "load_qtable_file": "medtune.searchers.qlearning_agent",
    "QLearningLRScheduler": "medtune.searchers.qlearning_scheduler",
    "EpisodeRecorder": "medtune.searchers.qlearning_scheduler",
    "read_mailbox": "medtune.searchers.qlearning_scheduler",
    "open_mailbox": "medtune.searchers.qlearning_scheduler",
    "LRMethod": "medtune.searchers.lr_methods",
    "EpochSchedule": "medtune.searchers.lr_schedules",
    "ScheduleConfig": "medtune.searchers.lr_schedules",
    "GreedyLR": "medtune.searchers.greedy_lr",
    "GreedyConfig": "medtune.searchers.greedy_lr",
    "EffortController": "medtune.searchers.effort_controller",
    "EffortConfig": "medtune.searchers.effort_controller",
    "EpisodicMemory": "medtune.searchers.episodic_memory",
    "Episode": "medtune.searchers.episodic_memory",
    "PBTConfig": "medtune.searchers.pbt",
    "make_pbt": "medtune.searchers.pbt",
    "DDPGAgent": "medtune.searchers.ddpg",
    "DDPGConfig": "medtune.searchers.ddpg",
    "reward_eq3": "medtune.searchers.ddpg",
    "select": "medtune.searchers.query_strategies",
    "STRATEGIES": "medtune.searchers.query_strategies",
    "stratified_random": "medtune.searchers.query_strategies",
    "badge": "medtune.searchers.badge",
    "gradient_embedding": "medtune.searchers.badge",
    "typiclust": "medtune.searchers.typiclust",
    "APGAConfig": "medtune.searchers.apga",
    "policy_loss": "medtune.searchers.apga",
    "RewardBaseline": "medtune.searchers.apga",
    "PaSeRConfig": "medtune.searchers.paser",
    "Router": "medtune.searchers.paser",
    "patch_reward": "medtune.searchers.paser",
    "reinforce_loss": "medtune.searchers.paser",
    "routed_inference": "medtune.searchers.paser",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
