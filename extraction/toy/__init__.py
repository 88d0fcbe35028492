"""The toy persona model: corpus (corpus.py, topics.py), training (train.py), proof (eval.py).

RECOMMENDED is the steering setting chosen by measurement on the shipped model (the sweep in
`persona-steer toy eval`; numbers in README.md, section "The toy persona model"): response-mean
vectors on the first three of its six layers, strength 1.0 (config.yaml says the same).
"""
RECOMMENDED = dict(position="response_mean", layers="0,1,2", layer_list=[0, 1, 2], strength=1.0)
