"""The toy persona model: corpus (corpus.py, topics.py), training (train.py), proof (eval.py).

RECOMMENDED is the steering setting chosen by measurement on the shipped model (the sweep in
`persona-steer toy eval`; numbers in README.md (section "The toy persona model")): response-mean vectors at every layer,
strength 0.7.
"""
RECOMMENDED = dict(position="response_mean", layers="all", strength=0.7)
