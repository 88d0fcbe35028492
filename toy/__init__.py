"""The toy persona model's development tools: its training corpus (corpus.py), trainer (train.py),
behavioural proof (eval.py), demo-vector builder (demo.py), demo-defaults measurement
(defaults.py) and their command line (cli.py: `persona-steer toy train|eval|vectors`).

What the served toy model needs at run time (its weights, demo vectors, measured setting, demo
defaults, and its language: styles, prompts, detectors) lives in persona_steer/ (toy_demo.py,
toy_language.py, toy_topics.py, toy_model/); nothing there, nor in server/, steering_plugin/,
clients/ or extraction/, imports this package (tests/foundation/test_fnd_layering.py).
"""
