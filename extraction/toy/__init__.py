"""The toy persona model: corpus (corpus.py, topics.py), training (train.py), proof (eval.py).

RECOMMENDED is the steering setting chosen by measurement on the shipped model (the sweep in
`persona-steer toy eval`; numbers in README.md, section "The toy persona model"): response-mean
vectors on the first three of its six layers, strength 0.9 (config.yaml says the same). It was
1.0 until the archetype datasets' six toy personas got the original system's adjectives: the
vectors extracted from those prompts point the same way (cosine 0.96-0.99) but are about 7%
longer after equalizing, and at 1.0 drill sergeant's steered answers looped (coherence 0.3-0.4);
0.9 is the old push again and meets every target of the proof (docs/toy-model.md).
"""
RECOMMENDED = dict(position="response_mean", layers="0,1,2", layer_list=[0, 1, 2], strength=0.9)
