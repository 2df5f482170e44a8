"""The DQN teacher: networks, replay, the pure vmapped learner (dqn), the driver (train), bench.

``climit teach`` -> :func:`climit.teacher.train.teach`; the evaluation's fresh learners ->
:func:`climit.teacher.train.train_learners`.
"""
